#!/usr/bin/env bash
# Run TVM's RPC server inside the emulated arm64 root (made by setup.sh), on loopback.
#
#   sudo tools/arm_emulator/start_rpc.sh ROOTDIR PORT                          # for --rpc 127.0.0.1:PORT
#   sudo tools/arm_emulator/start_rpc.sh ROOTDIR PORT --tracker 127.0.0.1:9190 --key arm64-emu
#
# Runs in the foreground (Ctrl-C or SIGTERM to the process group stops it). The server binds
# 127.0.0.1 only; a tracker address must be a loopback address as well. A server registered
# with a tracker only accepts sessions handed out by that tracker (use --tracker/--key then).
# With --tracker it is started on the host like this (also loopback only):
#   setsid .venv/bin/python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190 --port-end 9191 &
# Both the tracker and the server run their real work in a child (tvm.exec.popen_worker):
# stop them by process group (kill -TERM -- -PGID), or the child keeps the port open.
#
# /proc, /sys and /dev are mounted into the root in a private mount namespace (unshare), so
# nothing stays mounted after the server exits; without unshare they are mounted directly and
# unmounted again when this script exits (SIGTERM, SIGINT, or the server ending).
# Emulated timings are not performance figures.
set -euo pipefail

usage() { echo "usage: $0 ROOTDIR PORT [--tracker HOST:PORT --key KEY]" >&2; exit 2; }
[ $# -ge 2 ] || usage
ROOT="$1"; PORT="$2"; shift 2
TRACKER=""; KEY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tracker) TRACKER="${2:?}"; shift 2 ;;
    --key) KEY="${2:?}"; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$PORT" =~ ^[0-9]+$ ]] || usage
[ "$(id -u)" = 0 ] || { echo "start_rpc.sh: needs root (chroot)" >&2; exit 1; }
VENV_PY=/opt/tvm-venv/bin/python
[ -e "$ROOT/.prunec-arm-ready" ] && [ -x "$ROOT$VENV_PY" ] \
  || { echo "start_rpc.sh: $ROOT is not a ready emulated root; run tools/arm_emulator/setup.sh $ROOT" >&2; exit 1; }
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || { echo "start_rpc.sh: qemu-aarch64 is not registered with binfmt_misc; run setup.sh again" >&2; exit 1; }

ARGS=(--host 127.0.0.1 --port "$PORT" --port-end "$((PORT + 1))")
if [ -n "$TRACKER" ]; then
  thost="${TRACKER%:*}"
  case "$thost" in
    127.*|localhost|::1|\[::1\]) ;;
    *) echo "start_rpc.sh: tracker must be on a loopback address, got $TRACKER" >&2; exit 1 ;;
  esac
  [ -n "$KEY" ] || { echo "start_rpc.sh: --tracker needs --key KEY" >&2; exit 1; }
  ARGS+=(--tracker "$TRACKER" --key "$KEY")
fi

# The server's uploads and build files go to a folder of its own inside the root, named after this
# script's PID (= its process group when started with setsid, as arm_emu does): removed on exit, and
# by stop_recorded.sh when the script itself was killed.
WORK="/tmp/prunec-rpc-$$"
mkdir -p "$ROOT$WORK"
MOUNTED=()
CHILD=""
cleanup() {
  trap - EXIT INT TERM HUP
  if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; fi
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
  rm -rf --one-file-system "${ROOT:?}$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 130' INT

# Mount what the runtime may read (inside a private mount namespace these vanish with it).
MOUNTS='
mnt() { mountpoint -q "$2" && return 0; mount "${@:3}" "$1" "$2" 2>/dev/null && echo "$2"; }
mnt proc "$ROOT/proc" -t proc || exit 1
mnt sysfs "$ROOT/sys" -t sysfs || mnt /sys "$ROOT/sys" --rbind || true
if ! { [ -c "$ROOT/dev/null" ] && [ -c "$ROOT/dev/urandom" ]; }; then mnt /dev "$ROOT/dev" --rbind || exit 1; fi
'
RUN='exec chroot "$ROOT" /usr/bin/env -i PATH=/opt/tvm-venv/bin:/usr/bin:/bin HOME=/root TMPDIR="$WORK" \
  PYTHONUNBUFFERED=1 "$@"'
CMD=("$VENV_PY" -m tvm.exec.rpc_server "${ARGS[@]}")
if unshare --mount --propagation private true 2>/dev/null; then
  unshare --mount --propagation private bash -c "set -e; ROOT=\"\$1\"; WORK=\"\$2\"; shift 2; { $MOUNTS} >/dev/null; $RUN" \
    inner "$ROOT" "$WORK" "${CMD[@]}" &
else
  # No mount namespace: mount in the host's and unmount what was mounted here on exit.
  while read -r m; do [ -n "$m" ] && MOUNTED+=("$m"); done < <(ROOT="$ROOT" bash -c "$MOUNTS")
  bash -c "ROOT=\"\$1\"; WORK=\"\$2\"; shift 2; $RUN" inner "$ROOT" "$WORK" "${CMD[@]}" &
fi
CHILD=$!
wait "$CHILD"
