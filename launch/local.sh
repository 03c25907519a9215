#!/usr/bin/env bash
# Runs one config on every accelerator of this machine (data-parallel over all local devices).
#   launch/local.sh configs/default.py runs/default [--config.key=value ...]
set -euo pipefail
config=$1 workdir=$2; shift 2
cd "$(dirname "$0")/.."
exec python main.py --config="$config" --workdir="$workdir" "$@"
