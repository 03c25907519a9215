#!/usr/bin/env bash
# Runs a config on every host of a Cloud TPU VM slice (the repo must be at ~/jimb on each worker).
#   launch/tpu_vm.sh TPU_NAME ZONE configs/default.py gs://bucket/runs/x [--config.k=v]
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/jimb && python main.py --distributed --config=$config --workdir=$workdir $*"
