#!/usr/bin/env bash
# Stop the process groups listed in PIDFILE (one PGID a line, written by arm_emu when
# PRUNEC_PIDFILE is set) and remove the work folders their RPC servers left in ROOT/tmp.
#
#   tools/arm_emulator/stop_recorded.sh PIDFILE [ROOTDIR]
#
# Only what a run recorded is touched: never a process found by name (another job's tracker or
# python on the same host is not ours to stop).
set -uo pipefail
PIDFILE="${1:?usage: $0 PIDFILE [ROOTDIR]}"
ROOT="${2:-${PRUNEC_ARM_ROOT:-/var/tmp/prunec-arm64-root}}"
[ -r "$PIDFILE" ] || exit 0

mapfile -t GROUPS_ < <(grep -E '^[0-9]+$' "$PIDFILE" | sort -u)
alive() { kill -0 -- "-$1" 2>/dev/null; }

for g in "${GROUPS_[@]}"; do alive "$g" && kill -TERM -- "-$g" 2>/dev/null; done
for _ in $(seq 1 50); do  # up to 10 s for the servers' cleanup traps
  left=0
  for g in "${GROUPS_[@]}"; do alive "$g" && left=1; done
  [ "$left" = 0 ] && break
  sleep 0.2
done
for g in "${GROUPS_[@]}"; do alive "$g" && kill -KILL -- "-$g" 2>/dev/null; done
for g in "${GROUPS_[@]}"; do
  [ -d "$ROOT/tmp/prunec-rpc-$g" ] && rm -rf --one-file-system "$ROOT/tmp/prunec-rpc-$g"
done
exit 0
