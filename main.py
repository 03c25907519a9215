"""Runs an experiment: `python main.py --config=configs/default.py --workdir=runs/default`.

Flags only; all logic is in `jimb.experiment`. Override any config key with
`--config.block.key=value`; pass arguments to a config with `--config=configs/x.py:arg`.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and results go; rerun the "
                               "same command to resume.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "study", "compare"],
                          "train: k-fold train and evaluate (resumes); eval: re-evaluate the "
                          "saved best checkpoints without training; study: the config's "
                          "resampling study (config.study); compare: the config's arms side by "
                          "side (config.compare); all resumable.")
_CACHE = flags.DEFINE_string("compilation_cache", "~/.cache/jimb/xla",
                             "Persistent XLA compilation cache ('' to disable): folds, resumed "
                             "runs and eval runs reuse compiled steps instead of recompiling.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                                 "first (multi-host launches).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter hides the progress lines
  import jax  # after flag parsing, so --help is fast
  if _CACHE.value and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE.value))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from jimb import compare, experiment, study
  if _DISTRIBUTED.value:
    jax.distributed.initialize()

  def log(message: str) -> None:
    if jax.process_index() == 0:
      print(message, flush=True)

  run = {"train": experiment.train_and_evaluate, "eval": experiment.evaluate,
         "study": study.run_study, "compare": compare.run_compare}[_MODE.value]
  run(_CONFIG.value, _WORKDIR.value, log=log)


if __name__ == "__main__":
  app.run(main)
