"""The TVM backend's settings: one dataclass, built from the command line by `from_args` (or
directly by a Python caller), and the command-line options that fill it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from prunec.errors import PrunecError


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9090"`` for IPv6) -> ``("host", port)``; PrunecError if malformed."""
    text = (text or "").strip()
    host, sep, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise PrunecError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:9090), got {text!r}")
    return host, int(port_s)


@dataclass
class BackendOptions:
    """How to compile and measure. `target` is a name from prunec.backend.targets."""

    target: str = "x86"
    target_cpu: str | None = None       # LLVM CPU name (x86: default the host's)
    target_features: str | None = None  # extra LLVM features, "+dotprod,-fma"
    cuda_arch: str | None = None        # sm_NN (default: the GPU present, else sm_80)
    cuda_graph: bool = True             # cuda: run static-shape regions as captured CUDA graphs
    tune_trials: int = 0                # meta-schedule budget for both models together
    tuning_db: str | None = None        # default ~/.cache/prunec/tuning/<target-hash>
    threads: int | None = None          # default: all usable cores
    repeat: int = 10                    # timed samples per model and round
    rounds: int = 3                     # x86: interleaved timing rounds
    rpc: str | None = None              # arm: HOST:PORT of a TVM RPC server
    tracker: str | None = None          # arm: HOST:PORT of a TVM RPC tracker (with key)
    key: str | None = None
    winograd: bool = True               # x86/arm: 3x3 convs as Winograd where it pays
    blocked_layout: bool = True         # x86/arm: NCHW{b}c in depthwise-separable nets
    quiet: bool = False                 # no tuning progress lines
    sparse_kernels: bool = True         # x86: BSR kernels for sparsified layers where they time faster

    def check(self) -> "BackendOptions":
        """Raises PrunecError naming the option that is wrong (an unknown target is
        targets.get_target's to report)."""
        for what, value in (("--rpc", self.rpc), ("--tracker", self.tracker)):
            if value is not None:
                parse_hostport(value, what)
        if self.tracker and not self.key:
            raise PrunecError("--tracker needs --key (the device key registered at the tracker)")
        if self.threads is not None and self.threads < 1:
            raise PrunecError(f"--threads must be at least 1, got {self.threads}")
        for what, value, low in (("--tune-trials", self.tune_trials, 0),
                                 ("--repeat", self.repeat, 1), ("--rounds", self.rounds, 1)):
            if value < low:
                raise PrunecError(f"{what} must be at least {low}, got {value}")
        return self

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BackendOptions":
        """From a parser that add_arguments filled (and that has --target)."""
        return cls(target=args.target, target_cpu=args.target_cpu,
                   target_features=args.target_features, cuda_arch=args.cuda_arch,
                   cuda_graph=not getattr(args, "no_cuda_graph", False),
                   tune_trials=args.tune_trials, tuning_db=args.tuning_db, threads=args.threads,
                   repeat=args.repeat, rounds=args.rounds, rpc=args.rpc, tracker=args.tracker,
                   key=args.key, winograd=not args.no_winograd,
                   blocked_layout=not args.no_blocked_layout, quiet=getattr(args, "quiet", False),  # the CLI's -q
                   sparse_kernels=not getattr(args, "no_sparse_kernels", False))


def _hostport(text: str) -> str:
    try:
        parse_hostport(text, "the address")
    except PrunecError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
    return text


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v
    return parse


_positive = _int_at_least(1, "a positive integer")
_nonneg = _int_at_least(0, "an integer >= 0")


def add_arguments(parser: argparse.ArgumentParser, target_names=("x86", "arm", "cuda")) -> None:
    """The backend's options (prunec.backend.add_arguments passes the registered targets)."""
    g = parser.add_argument_group(f"TVM backend (with --target {'|'.join(target_names)})")
    g.add_argument("--target-cpu", metavar="CPU",
                   help="LLVM CPU name. x86: overrides the detected host CPU; arm: e.g. "
                        "cortex-a72, cortex-a76, neoverse-n1 (default: generic aarch64+neon)")
    g.add_argument("--target-features", metavar="F1,F2",
                   help="extra LLVM target features (mattr), comma separated, e.g. +dotprod")
    g.add_argument("--cuda-arch", metavar="SM",
                   help="CUDA architecture (default: that of the GPU present, else sm_80)")
    g.add_argument("--no-cuda-graph", action="store_true",
                   help="cuda: launch each kernel from the VM instead of replaying the model's "
                        "static-shape regions as captured CUDA graphs")
    g.add_argument("--tune-trials", type=_nonneg, default=0, metavar="N",
                   help="meta-schedule measurement budget, split evenly between the original and "
                        "the pruned model (default: 0, fast default schedules only)")
    g.add_argument("--tuning-db", metavar="PATH",
                   help="tuning database directory, reused across runs and models "
                        "(default: ~/.cache/prunec/tuning/<target-hash>)")
    g.add_argument("--threads", type=_positive, metavar="N",
                   help="threads for TVM and ONNX Runtime (default: all usable cores)")
    g.add_argument("--repeat", type=_positive, default=10, metavar="N",
                   help="timed samples per model and round (default: 10)")
    g.add_argument("--rounds", type=_positive, default=3, metavar="R",
                   help="x86: interleaved timing rounds (ORT and TVM, original and pruned, "
                        "in turn); each latency is its best round's median (default: 3)")
    g.add_argument("--rpc", type=_hostport, metavar="HOST:PORT",
                   help="TVM RPC server of the device to measure on (arm)")
    g.add_argument("--tracker", type=_hostport, metavar="HOST:PORT",
                   help="TVM RPC tracker to request a device from (arm); needs --key")
    g.add_argument("--key", metavar="KEY", help="device key at the tracker")
    g.add_argument("--no-winograd", action="store_true",
                   help="x86/arm: keep 3x3 convs direct instead of Winograd F(4x4|2x2, 3x3) "
                        "(bit-closer to ONNX Runtime, slower)")
    g.add_argument("--no-blocked-layout", action="store_true",
                   help="x86/arm: keep activations NCHW in depthwise-separable nets instead of "
                        "channel-blocked NCHW{vector}c (slower)")
    g.add_argument("--no-sparse-kernels", action="store_true",
                   help="x86: compile a sparsified model's weights dense instead of timing the block-sparse "
                        "kernel per layer (prunec/backend/sparse.py)")
