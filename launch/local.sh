#!/usr/bin/env bash
# Runs a config's sweep on this machine: every cell an ordinary experiment in <workdir>/<cell>,
# scheduled by Ray (one cell per GPU, or one pinned core per cell on a CPU), then the tables in
# <workdir>/sweep.md. A single run on all local devices is plain `python main.py`.
#   launch/local.sh configs/study_001.py runs/study [--cell_cpus=2] [--config.key=value ...]
set -euo pipefail
config=$1 workdir=$2; shift 2
cd "$(dirname "$0")/.."
exec python main.py --config="$config" --workdir="$workdir" --mode=sweep --executor=ray "$@"
