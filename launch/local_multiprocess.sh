#!/usr/bin/env bash
# N brain-jax processes on this host's CPU, joined by jax.distributed through a localhost
# coordinator: exercises the multi-host code paths (per-host loaders, global arrays, collective
# checkpoints) without a cluster.
#
#   launch/local_multiprocess.sh 2 configs/convnextv2_cls.py:runlocal /tmp/mp_run \
#       --config.data.data_dir=workdirs/demo/data
#
# Each process gets DEVICES_PER_PROCESS fake CPU devices (default 1). Logs: WORKDIR.procI.log.
set -euo pipefail
N=${1:?usage: $0 NUM_PROCESSES CONFIG[:ARG] WORKDIR [--config.key=value ...]}
CONFIG=${2:?config}
WORKDIR=${3:?workdir}
shift 3
PORT=${BRAIN_JAX_COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}
DEVICES=${DEVICES_PER_PROCESS:-1}
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES} ${XLA_FLAGS:-}"
pids=()
for ((i = 0; i < N; i++)); do
  brain-jax train --config "$CONFIG" --workdir "$WORKDIR" \
    --config.distributed.num_processes="$N" \
    --config.distributed.coordinator_address="localhost:${PORT}" \
    --config.distributed.process_id="$i" \
    --config.progress_bar="$([ "$i" = 0 ] && echo true || echo false)" "$@" \
    >"${WORKDIR%/}.proc${i}.log" 2>&1 &
  pids+=($!)
done
# Forward Ctrl-C / SIGTERM to every process so they checkpoint together.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
tail -n 3 "${WORKDIR%/}.proc0.log"
exit "$status"
