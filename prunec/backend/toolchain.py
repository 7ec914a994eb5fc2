"""The linker for cross-compiled artifacts: what turns TVM's aarch64 objects into a shared library.

Looked up in this order:
  1. Zig from PyPI (`pip install 'prunec[arm]'` installs `ziglang`): `zig cc -target aarch64-linux-gnu`
     brings its own glibc stubs, so nothing but pip is needed;
  2. the system cross compiler `aarch64-linux-gnu-g++` (Debian/Ubuntu: g++-aarch64-linux-gnu).
`check(target)` runs before any pruning, so a missing toolchain fails in a second with the command
that installs one, not after minutes of work.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from prunec.errors import PrunecError

ARM_TRIPLE = "aarch64-linux-gnu"
SYSTEM_ARM_CXX = "aarch64-linux-gnu-g++"
INSTALL_HINT = ("install one: pip install 'prunec[arm]' (Zig from PyPI, no root needed), "
                "or apt-get install g++-aarch64-linux-gnu")


def zig_path() -> Path | None:
    """The zig binary of the `ziglang` package, if installed (PRUNEC_NO_ZIG=1 ignores it)."""
    if os.environ.get("PRUNEC_NO_ZIG"):
        return None
    try:
        import ziglang
    except ImportError:
        return None
    path = Path(ziglang.__file__).parent / ("zig.exe" if sys.platform == "win32" else "zig")
    return path if path.is_file() else None


def arm_linker() -> list[str] | None:
    """The command that links aarch64 objects into a shared library, or None if there is none."""
    zig = zig_path()
    if zig is not None:
        # zig cc, not c++: TVM's objects need only libc/libm, and c++ would bundle libc++ into every .so
        return [str(zig), "cc", "-target", ARM_TRIPLE]
    system = shutil.which(SYSTEM_ARM_CXX)
    return [system] if system else None


def check(target: str) -> None:
    """Refuse a target whose toolchain is missing, with the exact install command."""
    if target == "arm" and arm_linker() is None:
        raise PrunecError(f"--target arm needs a linker for {ARM_TRIPLE} and none was found; {INSTALL_HINT}")


def arm_fcompile():
    """An `export_library` fcompile for aarch64 shared libraries."""
    from tvm.support import cc

    cmd = arm_linker()
    if cmd is None:
        raise PrunecError(f"no linker for {ARM_TRIPLE}; {INSTALL_HINT}")

    def link(output, objects, options=None):
        objects = [objects] if isinstance(objects, str) else list(objects)
        # -lm after the objects: g++ links libm implicitly, zig cc does not (an un-inlined expf)
        args = cmd + ["-shared", "-fPIC", "-o", output] + list(options or []) + objects + ["-lm"]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"linking {output} failed: {' '.join(args)}\n{proc.stdout}{proc.stderr}")

    return cc.cross_compiler(link, output_format="so")
