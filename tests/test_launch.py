"""The launch scripts pass every argument through unchanged, spaces and ';' included, to the
main.py that each host runs (gcloud, srun and python are stand-ins that record what they get)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parent.parent
ARGS = ["--config.data.path=/data/my scans; v2.npz", "--config.sweep.control=a b", "--config.x=$HOME"]


def _stand_ins(tmp_path: pathlib.Path) -> dict:
  """A PATH whose python records its argv, whose gcloud runs --command in a shell as a TPU host
  would, and whose srun runs its command; HOME holds an empty ~/jimb."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "argv.json"
  (bin_dir / "python").write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, sys
      json.dump(sys.argv[1:], open({str(record)!r}, "w"))
      """))
  (bin_dir / "gcloud").write_text(textwrap.dedent("""\
      #!/usr/bin/env bash
      while [[ $# -gt 0 ]]; do
        if [[ "$1" == --command ]]; then exec bash -c "$2"; fi
        shift
      done
      exit 3
      """))
  (bin_dir / "srun").write_text('#!/usr/bin/env bash\nexec "$@"\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  (tmp_path / "jimb").mkdir()
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
  return env


def _argv(tmp_path):
  return json.loads((tmp_path / "argv.json").read_text())


def test_tpu_vm_quotes_every_argument(tmp_path):
  env = _stand_ins(tmp_path)
  subprocess.run(["bash", str(REPO / "launch/tpu_vm.sh"), "tpu-1", "us-central2-b",
                  "configs/default.py", "gs://bucket/runs/x y", *ARGS], env=env, check=True)
  assert _argv(tmp_path) == ["main.py", "--distributed", "--config=configs/default.py",
                             "--workdir=gs://bucket/runs/x y", *ARGS]
  (tmp_path / "argv.json").unlink()
  dry = subprocess.run(["bash", str(REPO / "launch/tpu_vm.sh"), "tpu-1", "us-central2-b",
                        "configs/default.py", "gs://b/x", *ARGS], env={**env, "JIMB_DRY_RUN": "1"},
                       check=True, capture_output=True, text=True)
  assert dry.stdout.startswith("gcloud compute tpus tpu-vm ssh tpu-1 --zone=us-central2-b")
  assert not (tmp_path / "argv.json").exists()     # printed, not run


def test_slurm_sbatch_passes_arguments_through(tmp_path):
  env = _stand_ins(tmp_path)
  subprocess.run(["bash", str(REPO / "launch/slurm.sbatch"), "configs/default.py",
                  "/shared/runs/x", *ARGS], env=env, check=True, cwd=tmp_path)
  assert _argv(tmp_path) == ["main.py", "--distributed", "--config=configs/default.py",
                             "--workdir=/shared/runs/x", *ARGS]


def test_local_runs_a_sweep_on_ray(tmp_path):
  env = _stand_ins(tmp_path)
  subprocess.run(["bash", str(REPO / "launch/local.sh"), "configs/study_001.py", "runs/s",
                  "--cell_cpus=2", *ARGS], env=env, check=True)
  assert _argv(tmp_path) == ["main.py", "--config=configs/study_001.py", "--workdir=runs/s",
                             "--mode=sweep", "--executor=ray", "--cell_cpus=2", *ARGS]
