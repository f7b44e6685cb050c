#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian's slurm-wlm + munge, run as root), for testing
# launch/slurm.sbatch without a cluster. Everything lives in one private folder with its own munge key,
# munge socket, slurm.conf and ports; /etc/slurm and /etc/munge are left alone.
#
#   launch/local_slurm.sh up       # start munged, slurmctld, slurmd (no-op when already up)
#   eval "$(launch/local_slurm.sh env)"   # SLURM_CONF for sbatch / squeue / scancel / scontrol
#   launch/local_slurm.sh down     # stop the daemons started by `up` (no-op when already down)
#
# BRAIN_JAX_SLURM_DIR (default /tmp/brain_jax_slurm) holds the state; BRAIN_JAX_SLURM_PORT (default
# 16817) is slurmctld's port, slurmd takes the next one. The node offers this machine's CPUs and
# OverSubscribe=FORCE, so tasks may share cores; jobs run as root. A requeued job may start again after
# 10 s (SLURM's default is 120 s).
set -euo pipefail
DIR=${BRAIN_JAX_SLURM_DIR:-/tmp/brain_jax_slurm}
PORT=${BRAIN_JAX_SLURM_PORT:-16817}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

running() {  # running NAME: the daemon whose pid file is DIR/NAME.pid is alive
  local pid
  pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

write_conf() {
  local host cpus
  host=$(hostname -s)
  cpus=$(nproc)
  cat >"$CONF" <<EOF
# written by launch/local_slurm.sh
ClusterName=brainjax
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${PORT}
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (120 s by default)
AuthInfo=socket=${SOCKET},cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SwitchType=switch/none
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
# seconds between SIGTERM and SIGKILL on scancel / time limit
KillWait=30
MinJobAge=300
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
SlurmctldLogFile=${DIR}/slurmctld.log
SlurmdLogFile=${DIR}/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmd runs jobs as root here)"
  for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || die "$cmd not found; apt-get install -y slurm-wlm munge"
  done
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
  chmod 755 "$DIR"  # munged checks that its socket folder is reachable
  chmod 700 "$DIR/munge"
  if ! running munged; then
    [ -s "$DIR/munge/munge.key" ] || { head -c 1024 /dev/urandom >"$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"; }
    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" --pid-file="$DIR/munged.pid" \
      --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munged.seed"
  fi
  write_conf
  export SLURM_CONF=$CONF
  running slurmctld || slurmctld -f "$CONF"
  running slurmd || slurmd -f "$CONF"
  # Ready when the node accepts jobs (idle or mixed), within 30 s.
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1) || true
    case "$state" in
      idle* | mixed* | allocated*) echo "local SLURM cluster up: SLURM_CONF=$CONF"; return 0 ;;
      down* | drain*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

down() {
  local name pid
  for name in slurmd slurmctld munged; do
    pid=$(cat "$DIR/$name.pid" 2>/dev/null) || continue
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$DIR/$name.pid"
  done
  echo "local SLURM cluster down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
