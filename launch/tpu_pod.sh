#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: one brain-jax process per TPU VM host, all started at once.
# jax.distributed.initialize() detects the pod's coordinator and process ids by itself
# (--config.distributed.auto=true), so nothing else is configured here.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/convnextv2_cls.py:variant=base gs://BUCKET/workdirs/cnv2b \
#       [--config.key=value ...]
#
# Requirements on every host: this repository at ~/brain-jax with `pip install -e '.[tpu]'`, the
# datasets built under the data_dir the config names (a gs:// path or a disk every host sees), and a
# workdir every host can write (gs:// or a shared filesystem): orbax writes checkpoints collectively.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG[:ARG] WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
# Each override quoted for the VM's shell (printf with no arguments would still print one empty '').
EXTRA=""
if [ $# -gt 0 ]; then EXTRA=$(printf ' %q' "$@"); fi
REPO=${BRAIN_JAX_REPO:-'~/brain-jax'}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO && \
  export JAX_COMPILATION_CACHE_DIR=\${JAX_COMPILATION_CACHE_DIR:-\$HOME/.cache/brain_jax/xla} && \
  brain-jax train --config $(printf %q "$CONFIG") --workdir $(printf %q "$WORKDIR") \
    --config.distributed.auto=true $EXTRA
"
