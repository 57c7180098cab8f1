#!/usr/bin/env bash
# Start a REAL one-node SLURM (Debian's Slurm 22.05) on 127.0.0.1 with two fake GPUs, for tests.
#
#   sudo tests/slurm/start_slurm.sh [STATE_DIR]      (default /tmp/tunevlseg-slurm)
#   then sinfo / sbatch / snakemake --executor slurm work as on a cluster
#   sudo tests/slurm/stop_slurm.sh [STATE_DIR]       stops exactly the daemons started here (PIDs in STATE_DIR/pids)
#
# Needs root (no systemd: the daemons are started by hand). Installs the Debian packages
# `slurmctld slurmd slurm-client munge` when they are missing. Settings that were found to
# matter (docs/how-to/paper-grid-slurm.md): proctrack/linuxproc + task/none (no cgroups in containers),
# config_overrides (else a memory mismatch drains the node), node "localhost" at 127.0.0.1
# started with `slurmd -N localhost`, a fake GPU whose File= is a *character device*, and
# MinJobAge >= 3 x the plugin's first status delay so `squeue` status checks keep working.
# The config goes to /etc/slurm/ (the default path): the jobstep plugin strips SLURM_* variables,
# SLURM_CONF included, before its inner `srun`, which then finds no config. A slurm.conf that
# this script did not write is never overwritten; stop_slurm.sh removes the ones it wrote.
set -euo pipefail

STATE=${1:-/tmp/tunevlseg-slurm}
if [[ $(id -u) -ne 0 ]]; then
  echo "start_slurm.sh: must run as root (starts munged, slurmctld, slurmd)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi

MARK="# written by tunevlseg tests/slurm/start_slurm.sh"
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
  if [[ -e $f ]] && ! grep -qxF "$MARK" "$f"; then
    echo "start_slurm.sh: $f exists and was not written by this script: not touching a real SLURM set-up" >&2
    exit 1
  fi
done
if [[ -s $STATE/pids ]]; then
  echo "start_slurm.sh: $STATE/pids exists: stop that cluster first (tests/slurm/stop_slurm.sh $STATE)" >&2
  exit 1
fi
rm -rf "$STATE"/{ctld,spool}  # a fresh cluster: no jobs from an earlier run
mkdir -p "$STATE"/{ctld,spool,munge,run}
chmod 755 "$STATE/munge"
: > "$STATE/pids"

# munge: its own key, socket and PID in STATE (no system-wide state touched).
dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
SOCKET=$STATE/munge/munge.socket
munged --foreground --force --key-file="$STATE/munge/munge.key" --socket="$SOCKET" \
  --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
  --seed-file="$STATE/munge/munge.seed" >> "$STATE/munge/munged.out" 2>&1 &
echo "munged $!" >> "$STATE/pids"

# Two fake GPUs: SLURM only accepts character devices as GRES files.
for i in 0 1; do
  [[ -c $STATE/fakegpu$i ]] || mknod "$STATE/fakegpu$i" c 1 3
done

CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=tunevlseg-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=300
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/gres.conf <<EOF
$MARK
AutoDetect=off
NodeName=localhost Name=gpu File=$STATE/fakegpu[0-1]
EOF
unset SLURM_CONF

slurmctld -D -c >> "$STATE/slurmctld.out" 2>&1 &
echo "slurmctld $!" >> "$STATE/pids"
slurmd -D -N localhost >> "$STATE/slurmd.out" 2>&1 &
echo "slurmd $!" >> "$STATE/pids"

for _ in $(seq 60); do
  if sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
    echo "SLURM is up (/etc/slurm/slurm.conf, state in $STATE)"
    exit 0
  fi
  sleep 0.5
done
echo "start_slurm.sh: the node did not become idle in 30 s:" >&2
sinfo -N -l >&2 || true
tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
exit 1
