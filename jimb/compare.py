"""Arms of one experiment side by side, as the GAN-balancing seeds tabulate them (seed 004's
Table 1: original vs augmentation vs vanilla GAN vs LSGAN vs CGAN; seed 000's ORG vs GAN).

workdir/<arm>/                     one k-fold experiment per arm, resumable
workdir/compare.json, compare.md   per-class precision / recall / F1 of the pooled out-of-fold
                                   predictions, macro-F1 and balanced accuracy per arm, and for
                                   synthesising arms the rejection rate, mean per-class FID and
                                   k-NN precision / recall, and the final GAN losses
`config.compare.arms` is "name: key=value key=value; name: ...": each arm is the config with
those keys changed (an arm with no keys runs the config as it is).
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Callable

import numpy as np

from jimb import config as config_lib
from jimb import experiment

Log = Callable[[str], None]


def parse_arms(config, text: str) -> dict:
  """{arm name: config with the arm's keys set}; an unknown key names the arm and the key."""
  arms = {}
  for item in filter(None, (part.strip() for part in text.split(";"))):
    name, sep, changes = item.partition(":")
    name = name.strip()
    if not sep or not name or name in arms:
      raise ValueError(f"--config.compare.arms: {item!r} must read 'name: key=value ...' with "
                       "a new name")
    arm = copy.deepcopy(config)
    for change in changes.split():
      key, _, value = change.partition("=")
      *path, last = key.split(".")
      node = arm
      try:
        for p in path:
          node = node[p]
        node[last] = config_lib.typed(node[last], value)
      except (KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"arm {name!r} of --config.compare.arms: cannot set {key}={value!r} "
                         f"({e})") from e
    arms[name] = arm
  if not arms:
    raise ValueError("set --config.compare.arms, e.g. 'original:; gan: synth.method=dcgan'")
  return arms


def _synthesis_summary(folds: list[dict]) -> dict:
  reports = [f["synthesis"] for f in folds if "synthesis" in f]
  if not reports:
    return {}
  mean = lambda key: float(np.nanmean([s[key] for r in reports for s in r["scores"].values()]
                                      or [np.nan]))
  losses = [r["final_losses"] for r in reports if r.get("final_losses")]
  return {
      "rejection_rate": float(np.mean([r["filter"]["rejection_rate"] for r in reports])),
      "fid": mean("fid"), "precision": mean("precision"), "recall": mean("recall"),
      "final_losses": {k: float(np.mean([np.mean(l[k]) for l in losses])) for k in losses[0]}
      if losses else {},
  }


def run_compare(config, workdir: str | pathlib.Path, log: Log = print) -> dict:
  workdir = pathlib.Path(workdir)
  rows = {}
  for name, arm in parse_arms(config, config.compare.arms).items():
    log(f"compare: arm {name}")
    results = experiment.train_and_evaluate(arm, workdir / name, log=log)
    pooled = results["summary"]["pooled"]
    rows[name] = {"per_class": pooled["per_class"], "macro_f1": pooled["macro_f1"],
                  "balanced_accuracy": pooled["balanced_accuracy"],
                  "synthesis": _synthesis_summary(results["folds"])}
  names = results["data"]["class_names"]
  text = markdown(rows, names)
  (workdir / "compare.json").write_text(json.dumps(rows, indent=1, allow_nan=True))
  (workdir / "compare.md").write_text(text + "\n")
  log(text)
  return rows


def markdown(rows: dict, names: list[str]) -> str:
  head = "| arm | " + " | ".join(f"{n} P | {n} R | {n} F1" for n in names)
  head += " | macro-F1 | bal. acc | rejected | FID | k-NN P | k-NN R | final losses |"
  lines = [head, "|---" * (3 * len(names) + 8) + "|"]
  for arm, r in rows.items():
    pc = r["per_class"]
    cells = [f"{pc[m][i]:.3f}" for i in range(len(names)) for m in ("precision", "recall", "f1")]
    cells += [f"{r['macro_f1']:.4f}", f"{r['balanced_accuracy']:.4f}"]
    s = r["synthesis"]
    cells += ([f"{s['rejection_rate']:.3f}", f"{s['fid']:.2f}", f"{s['precision']:.3f}",
               f"{s['recall']:.3f}", " ".join(f"{k} {v:.3f}" for k, v in s["final_losses"].items())]
              if s else ["-"] * 5)
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
