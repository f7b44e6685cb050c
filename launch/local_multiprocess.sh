#!/usr/bin/env bash
# N brain-jax processes on this host's CPU, joined by jax.distributed through a localhost
# coordinator: exercises the multi-host code paths (per-host loaders, global arrays, collective
# checkpoints) without a cluster.
#
#   launch/local_multiprocess.sh 2 configs/convnextv2_cls.py:runlocal /tmp/mp_run \
#       --config.data.data_dir=workdirs/demo/data
#
# Each process gets DEVICES_PER_PROCESS fake CPU devices (default 1). Logs: WORKDIR.procI.log.
# Ctrl-C / SIGTERM reach every process: they save a checkpoint at the same step and exit 143. A process
# that dies (kill -9, an error) stops the others at once (they would wait for it at the next collective)
# and the script names it and exits with its status; run the same command again to resume from the
# last complete checkpoint.
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
declare -A rank_of
for ((i = 0; i < N; i++)); do
  brain-jax train --config "$CONFIG" --workdir "$WORKDIR" \
    --config.distributed.num_processes="$N" \
    --config.distributed.coordinator_address="localhost:${PORT}" \
    --config.distributed.process_id="$i" \
    --config.progress_bar="$([ "$i" = 0 ] && echo true || echo false)" "$@" \
    >"${WORKDIR%/}.proc${i}.log" 2>&1 &
  pids+=($!)
  rank_of[$!]=$i
done
running=("${pids[@]}")  # the processes not yet waited for
trap 'kill -TERM "${running[@]}" 2>/dev/null || true' INT TERM

describe() {  # describe STATUS: how a process ended
  if [ "$1" -gt 128 ]; then echo "was killed by signal $(($1 - 128)) ($(kill -l "$1" 2>/dev/null || echo ?))"
  else echo "exited with status $1"; fi
}

status=0
while ((${#running[@]} > 0)); do
  pid=
  wait -n -p pid "${running[@]}" && rc=0 || rc=$?
  [ -n "$pid" ] || continue  # a trapped signal ended the wait
  still=()
  for p in "${running[@]}"; do [ "$p" = "$pid" ] || still+=("$p"); done
  running=("${still[@]}")
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 143 ]; then  # done, or stopped with a checkpoint
    [ "$status" -ne 0 ] || status=$rc
    continue
  fi
  echo "local_multiprocess.sh: process ${rank_of[$pid]} (pid $pid) $(describe "$rc"); stopping the others" \
    "(they would wait for it at the next collective). Run the same command again to resume from the last" \
    "complete checkpoint. Its log: ${WORKDIR%/}.proc${rank_of[$pid]}.log" >&2
  if ((${#running[@]} > 0)); then
    kill -KILL "${running[@]}" 2>/dev/null || true
    wait "${running[@]}" 2>/dev/null || true
  fi
  status=$rc
  break
done
tail -n 3 "${WORKDIR%/}.proc0.log"
exit "$status"
