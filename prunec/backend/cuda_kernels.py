"""CUDA kernels compiled where the library is built, not where it is loaded.

TVM exports a CUDA library as CUDA C and compiles that C each time the library is loaded (its
`tvm_callback_cuda_compile` hook): the machine that runs the model then needs nvcc or NVRTC, and
every load of YOLOv8n paid 15-19 s of nvcc on an H200 host. prunec compiles the source once,
beside the library (`model.so` -> `model.cuda/<sha256 of the source>.<sm_XY>.fatbin`), and the
loader here answers TVM's hook from those files; a source it has no binary for (another GPU, an
edited library) is compiled then, with nvcc, and kept in the same folder when it is writable.

Only the standard library and tvm_ffi are imported: this runs on deployment machines that have
TVM's runtime and nothing else of prunec's dependencies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def kernels_dir(lib_path) -> Path:
    """Where the compiled kernels of an exported library live."""
    return Path(lib_path).with_suffix(".cuda")


def cuda_source(executable) -> str | None:
    """The CUDA C of a compiled Relax executable (None when it has no CUDA kernels)."""
    mods = executable.mod._collect_from_import_tree(lambda _m: True)
    for m in mods:
        if getattr(m, "kind", None) == "cuda":
            return m.inspect_source()
    return None


def _key(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:32]


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    path = Path(home, "bin", "nvcc")
    return str(path) if path.is_file() else None


def compile_fatbin(code: str, arch: str) -> bytes:
    """nvcc's fatbin of `code` for sm_XY (machine code for it, and PTX for newer GPUs)."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("no nvcc here (set CUDA_HOME, or put nvcc on PATH)")
    with tempfile.TemporaryDirectory(prefix="prunec-cuda-") as d:
        src, dst = Path(d, "kernels.cu"), Path(d, "kernels.fatbin")
        src.write_text(code)
        done = subprocess.run([nvcc, "--fatbin", "-O3", f"-arch={arch}", "-o", str(dst),
                               str(src)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed: {done.stderr.strip().splitlines()[-1:]}")
        return dst.read_bytes()


def precompile(executable, lib_path, arch: str) -> Path | None:
    """Compile an exported library's kernels for `arch` beside it; returns the file, or None
    when there is nothing to compile or no nvcc here (the library then compiles at load)."""
    code = cuda_source(executable)
    if code is None or nvcc_path() is None:
        return None
    folder = kernels_dir(lib_path)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{_key(code)}.{arch}.fatbin"
    out.write_bytes(compile_fatbin(code, arch))
    return out


def gpu_arch() -> str:
    import tvm

    return "sm_" + tvm.cuda(0).compute_version.replace(".", "")


def use_precompiled(*folders, arch: str | None = None, log=None) -> None:
    """Answer TVM's load-time compile hook from `folders` (kernels_dir of each library), else
    compile with nvcc for the GPU present and keep the result in the first writable folder.
    Call before loading the libraries. arch: sm_XY (default: the GPU present's)."""
    import tvm_ffi

    dirs = [Path(f) for f in folders]

    def compile_hook(code: str) -> bytearray:
        sm = arch or gpu_arch()
        name = f"{_key(code)}.{sm}.fatbin"
        for d in dirs:
            if (d / name).is_file():
                return bytearray((d / name).read_bytes())
        if log:
            log(f"no precompiled kernels for this library on {sm}: compiling with nvcc")
        binary = compile_fatbin(code, sm)
        for d in dirs:
            try:
                d.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes(binary)
                break
            except OSError:
                continue
        return bytearray(binary)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_hook, override=True)
