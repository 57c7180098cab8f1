#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_slurm.sh started, by the PIDs it recorded (never by name).
set -uo pipefail

STATE=${1:-/tmp/tunevlseg-slurm}
[[ -f $STATE/pids ]] || exit 0
# slurmd first (it kills its job steps), then the controller, then munge.
for name in slurmd slurmctld munged; do
  pid=$(awk -v n="$name" '$1 == n {print $2}' "$STATE/pids")
  [[ -n $pid ]] || continue
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
done
rm -f "$STATE/pids"
MARK="# written by tunevlseg tests/slurm/start_slurm.sh"
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
  [[ -f $f ]] && grep -qxF "$MARK" "$f" && rm -f "$f"
done
exit 0
