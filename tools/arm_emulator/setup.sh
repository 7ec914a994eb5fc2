#!/usr/bin/env bash
# Build an emulated arm64 (aarch64) Debian root that can run TVM's RPC server.
#
#   sudo tools/arm_emulator/setup.sh [ROOTDIR]      (default: /var/tmp/prunec-arm64-root)
#
# Idempotent: every step checks whether it is already done. Needs root (apt-get,
# debootstrap, chroot, binfmt_misc). Steps:
#   1. host packages: qemu-user-static binfmt-support debootstrap gcc/g++-aarch64-linux-gnu
#      (apt-get update at most once, only when something is missing)
#   2. binfmt_misc mounted and qemu-aarch64 registered (containers may need the mount)
#   3. debootstrap --arch arm64 --variant=minbase bookworm ROOTDIR, from the Debian
#      mirror this machine's apt already uses, with python3, python3-venv, libstdc++6
#   4. PyPI aarch64 wheels (apache-tvm, apache-tvm-ffi, numpy, ...) downloaded on the
#      host (fast) and installed into a venv in the root at /opt/tvm-venv (emulated pip,
#      offline: --no-index --find-links)
#   5. smoke test: the emulated python imports tvm and reports aarch64
#
# Emulated execution is for correctness only: timings under qemu are not performance figures.
set -euo pipefail

ROOT="${1:-${PRUNEC_ARM_ROOT:-/var/tmp/prunec-arm64-root}}"
SUITE=bookworm
TVM_VERSION=0.27.0.post1
TVM_FFI_VERSION=0.1.14.post0
# Python packages for the device side. psutil/cloudpickle/tornado are what TVM's RPC
# and meta-schedule runners import; numpy is required by tvm itself.
DEVICE_PKGS=("apache-tvm==${TVM_VERSION}" "apache-tvm-ffi==${TVM_FFI_VERSION}" "numpy<3" psutil cloudpickle tornado)
# debian-archive-keyring: already on Debian; on Ubuntu hosts debootstrap needs it for bookworm.
HOST_PKGS=(qemu-user-static binfmt-support debootstrap debian-archive-keyring gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)

log() { printf '[arm-setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get, debootstrap, chroot, binfmt_misc)"
START=$(date +%s)
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---- 1. host packages ---------------------------------------------------------------
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# binfmt_misc must be mounted before qemu-user-static's postinst registers its handlers.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  log "mounting binfmt_misc"
  mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (container without privileges?); run with --privileged or register qemu-aarch64 on the host kernel"
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "host packages present"
fi

# ---- 2. binfmt registration -----------------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  log "registering qemu-aarch64 with binfmt_misc"
  update-binfmts --enable qemu-aarch64 || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is not registered in /proc/sys/fs/binfmt_misc"
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt handler is disabled"

# ---- 3. debootstrap --------------------------------------------------------------------
# The Debian mirror apt uses here (deb822 .sources or one-line .list), not -security/-updates.
find_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    while read -r uri; do
      case "$uri" in
        */debian|*/debian/) echo "${uri%/}"; return 0 ;;
      esac
    done < <(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[^[:space:]]+' "$f" 2>/dev/null \
             | awk '{print $NF}')
  done
  echo "http://deb.debian.org/debian"
}

# Debian's handler has the fix-binary (F) flag: the kernel keeps qemu open and chroot just
# works. Without F the kernel looks the interpreter up inside the chroot: copy it there,
# under the registered path and as /usr/bin/qemu-aarch64-static.
qemu_into_root() {
  local interp
  [ -x "$ROOT/usr/bin/qemu-aarch64-static" ] || cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
  if ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    interp="$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
    if [ -n "$interp" ] && [ ! -e "$ROOT$interp" ]; then
      mkdir -p "$ROOT$(dirname "$interp")"
      cp /usr/bin/qemu-aarch64-static "$ROOT$interp"
    fi
  fi
}

DONE_MARK="$ROOT/.prunec-debootstrap-done"
if [ -e "$DONE_MARK" ]; then
  log "root already bootstrapped: $ROOT"
else
  MIRROR="$(find_mirror)"
  if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT" 2>/dev/null)" ]; then
    # Only wipe what an interrupted run of this script left behind.
    if [ -e "$ROOT/.prunec-debootstrap-started" ]; then
      log "removing incomplete root from an interrupted run: $ROOT"
      for m in proc sys dev/pts dev; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m" || true; done
      rm -rf --one-file-system "$ROOT"
    else
      die "$ROOT exists, is not empty and was not made by this script; pass another ROOTDIR"
    fi
  fi
  mkdir -p "$ROOT"
  touch "$ROOT/.prunec-debootstrap-started"
  log "debootstrap arm64 $SUITE from $MIRROR into $ROOT (stage 1, host)"
  t0=$(date +%s)
  debootstrap --foreign --arch arm64 --variant=minbase \
    --include=python3,python3-venv,libstdc++6,ca-certificates \
    "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; die "debootstrap stage 1 failed (log: $ROOT.debootstrap.log)"; }
  qemu_into_root
  log "debootstrap stage 2 (emulated)"
  chroot "$ROOT" /debootstrap/debootstrap --second-stage >>"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; die "debootstrap stage 2 failed (log: $ROOT.debootstrap.log)"; }
  chmod 1777 "$ROOT/tmp"
  rm -f "$ROOT/.prunec-debootstrap-started"
  touch "$DONE_MARK"
  log "debootstrap done in $(( $(date +%s) - t0 )) s"
fi
qemu_into_root
[ "$(chroot "$ROOT" /bin/uname -m)" = aarch64 ] || die "chroot $ROOT does not run as aarch64"

# ---- 4. TVM wheels ----------------------------------------------------------------------
VENV=/opt/tvm-venv
WHEELS=/opt/wheels
check_tvm() {
  chroot "$ROOT" "$VENV/bin/python" -c \
    "import platform, tvm, tvm_ffi; assert platform.machine()=='aarch64'; assert tvm.__version__=='$TVM_VERSION', tvm.__version__; print('tvm', tvm.__version__, platform.machine())" 2>/dev/null
}
if [ -x "$ROOT$VENV/bin/python" ] && TVM_INFO="$(check_tvm)"; then
  log "TVM already installed in $ROOT$VENV"
else
  PYV="$(chroot "$ROOT" /usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  HOST_PY=""
  for c in python3 /usr/bin/python3; do
    if "$c" -m pip --version >/dev/null 2>&1; then HOST_PY="$c"; break; fi
  done
  PIP_SRC=()
  if [ -n "$HOST_PY" ]; then
    log "downloading aarch64 wheels on the host (cp$PYV, manylinux aarch64) into $ROOT$WHEELS"
    mkdir -p "$ROOT$WHEELS"
    "$HOST_PY" -m pip download -q --disable-pip-version-check \
      --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
      --platform linux_aarch64 --implementation cp --python-version "$PYV" --only-binary=:all: \
      -d "$ROOT$WHEELS" "${DEVICE_PKGS[@]}" \
      || die "pip download of aarch64 wheels failed"
    PIP_SRC=(--no-index --find-links "$WHEELS")
  else
    log "no pip on the host: emulated pip will download from PyPI (slower)"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  fi
  log "creating $VENV in the root and installing wheels (emulated pip)"
  t0=$(date +%s)
  chroot "$ROOT" /usr/bin/python3 -m venv --clear "$VENV"
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
    "${PIP_SRC[@]}" "${DEVICE_PKGS[@]}" \
    || die "pip install inside the root failed"
  log "wheels installed in $(( $(date +%s) - t0 )) s"
  TVM_INFO="$(check_tvm)" || die "tvm does not import inside the emulated root"
fi

# ---- 5. done ------------------------------------------------------------------------------
echo "$TVM_VERSION" > "$ROOT/.prunec-arm-ready"
log "emulated python: $TVM_INFO"
log "ready: $ROOT (python: chroot $ROOT $VENV/bin/python) in $(( $(date +%s) - START )) s"
log "start an RPC server with: $SCRIPT_DIR/start_rpc.sh $ROOT PORT"
