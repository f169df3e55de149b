#!/usr/bin/env bash
# A local one-node Slurm cluster (slurmctld + slurmd + munged) for tests and demos.
#   scripts/slurm-local.sh start|stop|status
# Needs root and the Debian packages slurmctld, slurmd, slurm-client, munge.
#
# start  is idempotent: it starts only what is not running and waits (up to 60 s) until
#        `sinfo` shows the node idle. It writes /etc/slurm/slurm.conf (and with Slurm 24.05
#        or later cgroup.conf) only if the file is absent or was written by this script
#        (first line is the marker below); one written by anyone else is left alone and
#        used as it is (and with someone else's slurm.conf, cgroup.conf is not written).
# stop   stops the daemons this script started (by their pid files).
# status prints the node state; exit 0 when the node is idle or allocated, 1 otherwise.
#
# Exit codes: 0 ok, 1 failure, 2 bad usage, 77 cannot run here (not root, Slurm missing).
set -euo pipefail

readonly marker="# written by foldfarm scripts/slurm-local.sh"
readonly conf=/etc/slurm/slurm.conf
readonly cgroup_conf=/etc/slurm/cgroup.conf
readonly logdir=/var/log/slurm
readonly ctld_pid=/run/slurmctld.pid
readonly slurmd_pid=/run/slurmd.pid
readonly munge_pid=/run/munge/munged.pid
conf_changed=0

die() { echo "slurm-local: $*" >&2; exit 1; }
skip() { echo "slurm-local: cannot run a local Slurm cluster here: $*" >&2; exit 77; }

pid_alive() {  # pid_alive FILE: the pid in FILE names a live process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {
  sinfo -h -N -n "$(hostname -s)" -o '%t' 2>/dev/null | head -n1 || true
}

preflight() {
  [ "$(id -u)" -eq 0 ] || skip "needs root (running as $(id -un))"
  local b
  for b in munged slurmctld slurmd sinfo sbatch scontrol; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
      skip "'$b' not installed (apt-get install slurmctld slurmd slurm-client munge)"
  done
  [ -f /etc/munge/munge.key ] || skip "/etc/munge/munge.key missing (reinstall munge)"
  # slurmctld, slurmd and every client find the controller by this name: unresolved, each
  # call retries for seconds and the start would end in a timeout that names nothing.
  getent hosts "$(hostname -s)" >/dev/null ||
    die "this host's name '$(hostname -s)' does not resolve; add it to /etc/hosts (e.g. 127.0.1.1 $(hostname -s))"
}

write_conf() {
  local host cpus mem_kb mem_mb
  host=$(hostname -s)
  # Not plain `nproc`: it obeys OMP_NUM_THREADS/OMP_THREAD_LIMIT, which test runners set
  # to 1, and a node declared with 1 CPU leaves a 2-task srun pending for ever.
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  # Leave some memory to the system so that slurmd does not drain the node for reporting
  # less than the configured RealMemory.
  mem_mb=$(( mem_kb / 1024 * 9 / 10 ))
  mkdir -p /etc/slurm
  # Time limits: no OverTimeLimit, so a job gets SIGTERM at its limit and SIGKILL KillWait
  # (5 s) later. slurmctld checks limits every 30 s, so a job's --signal=B:USR1@<grace>
  # warning comes grace to grace + 30 s before its end and the limit is enforced 0-30 s
  # after it: the workers have at least `grace` seconds to save at their next batch.
  local tmp="$conf.tmp.$$"
  cat >"$tmp" <<EOF
$marker
ClusterName=foldfarm-local
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=60
OverTimeLimit=0
KillWait=5
InactiveLimit=0
MaxArraySize=1001
MaxJobCount=10000
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  install_conf "$tmp" "$conf"
}

# Slurm 24.05 and later initialise a cgroup plugin in slurmd even with the plugins above,
# and stop where /sys/fs/cgroup is not mounted (containers, chroots); this cluster tracks
# processes without cgroups, so it turns them off (a value older Slurm does not know).
write_cgroup_conf() {
  local tmp="$cgroup_conf.tmp.$$"
  printf '%s\nCgroupPlugin=disabled\n' "$marker" >"$tmp"
  install_conf "$tmp" "$cgroup_conf"
}

install_conf() {  # install_conf TMP FILE: FILE takes TMP's text (conf_changed=1) unless equal
  if [ -e "$2" ] && cmp -s "$1" "$2"; then
    rm -f "$1"
    return 0
  fi
  mv -f "$1" "$2"
  conf_changed=1
}

ours_or_absent() {  # ours_or_absent FILE: FILE is absent or was written by this script
  [ ! -e "$1" ] || head -n1 "$1" | grep -qxF "$marker"
}

slurm_at_least() {  # slurm_at_least VERSION: slurmd's version ("slurm 24.11.5") is at least
  local v
  v=$(/usr/sbin/slurmd -V 2>/dev/null | awk '{print $2}')
  [ -n "$v" ] && [ "$(printf '%s\n' "$1" "$v" | sort -V | head -n1)" = "$1" ]
}

ensure_conf() {
  # Ours or absent: written (again: the node's CPUs/memory may differ on this machine).
  # Someone else's slurm.conf may use cgroups: then no cgroup.conf is written either.
  if ! ours_or_absent "$conf"; then
    theirs "$conf"
    return 0
  fi
  write_conf
  if slurm_at_least 24.05; then
    if ours_or_absent "$cgroup_conf"; then write_cgroup_conf; else theirs "$cgroup_conf"; fi
  fi
}

theirs() { echo "slurm-local: using the existing $1 (not written by this script)" >&2; }

start() {
  preflight
  # Test programs call `start` concurrently: one at a time.
  exec 9>/run/foldfarm-slurm-local.lock
  flock 9
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld "$logdir"
  install -d -m 0755 /var/spool/slurmd
  ensure_conf
  if [ "$conf_changed" -eq 1 ] && { pid_alive "$slurmd_pid" || pid_alive "$ctld_pid"; }; then
    # The daemons run with another node description: restart them with this one.
    echo "slurm-local: $conf changed; restarting slurmd and slurmctld" >&2
    stop_one slurmd "$slurmd_pid"
    stop_one slurmctld "$ctld_pid"
  fi
  if ! pid_alive "$munge_pid" && ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force 9>&- ||
      /usr/sbin/munged --force 9>&- || die "munged failed to start"
  fi
  local i
  for i in $(seq 1 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null >/dev/null 2>&1 || die "munged does not answer (see syslog)"
  if ! pid_alive "$ctld_pid"; then
    /usr/sbin/slurmctld 9>&- || die "slurmctld failed to start (see $logdir/slurmctld.log)"
  fi
  for i in $(seq 1 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
  scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (see $logdir/slurmctld.log)"
  if ! pid_alive "$slurmd_pid"; then
    /usr/sbin/slurmd 9>&- || die "slurmd failed to start (see $logdir/slurmd.log)"
  fi
  local st=""
  for i in $(seq 1 300); do
    st=$(node_state)
    case "$st" in
      idle|alloc|mix|comp) break ;;
      down*|drain*|drng*)
        # A node marked down by an earlier run (e.g. slurmd was killed) returns here.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  case "$st" in
    idle|alloc|mix|comp) echo "slurm-local: node $(hostname -s) is $st" >&2 ;;
    *) die "node $(hostname -s) is '${st:-unknown}' after 60 s (see $logdir/slurmd.log)" ;;
  esac
}

stop_one() {  # stop_one NAME PIDFILE
  if pid_alive "$2"; then
    local pid i
    pid=$(cat "$2")
    kill "$pid"
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "slurm-local: $1 (pid $pid) did not stop in 5 s" >&2
    return 1
  fi
}

stop() {
  [ "$(id -u)" -eq 0 ] || skip "needs root"
  stop_one slurmd "$slurmd_pid"
  stop_one slurmctld "$ctld_pid"
  echo "slurm-local: stopped slurmd and slurmctld (munged left running)" >&2
}

status() {
  local st
  st=$(node_state)
  echo "node $(hostname -s): ${st:-not reachable}"
  case "$st" in idle|alloc|mix|comp) return 0 ;; *) return 1 ;; esac
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help) sed -n '2,/^set /{/^#/p}' "$0" ;;
  *) echo "usage: $0 start|stop|status (see --help)" >&2; exit 2 ;;
esac
