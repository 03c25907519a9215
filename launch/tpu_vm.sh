#!/usr/bin/env bash
# Runs one config on every host of a Cloud TPU VM slice, one process per host, all chips in one
# mesh (the repo must be at ~/jimb on each worker; the workdir on storage every host sees).
#   launch/tpu_vm.sh TPU_NAME ZONE configs/default.py gs://bucket/runs/x [--config.k=v ...]
# Each argument reaches the hosts' main.py as it was given, spaces and ';' included.
# JIMB_DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
remote="cd ~/jimb && python main.py --distributed$(printf ' %q' "--config=$config" \
  "--workdir=$workdir" "$@")"
command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command "$remote")
if [[ "${JIMB_DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${command[@]}"
  echo
else
  "${command[@]}"
fi
