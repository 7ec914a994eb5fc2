"""Command line: `prunec MODEL.onnx [options]` prunes (and compiles); `prunec inspect MODEL.onnx` lists groups."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .errors import PrunecError, one_line


def _checked(convert, ok, what: str):
    """An argparse type: convert, then check the value (one message per failure)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if convert is int else 'a number'}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} {what}")
        return value
    return parse


_ratio = _checked(float, lambda v: 0.0 <= v < 1.0, "is outside [0, 1)")
_share = _checked(float, lambda v: 0.0 < v <= 1.0, "is outside (0, 1]")
_positive_int = _checked(int, lambda v: v >= 1, "must be at least 1")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, like every other prunec error."""

    def error(self, message):
        raise PrunecError(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to read (never modified)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="static shape for an input with dynamic dims (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE",
                   help="node whose output channels are kept (repeatable)")


def prune_parser() -> argparse.ArgumentParser:
    from . import criteria

    p = _Parser(prog="prunec", description=(
        "Prune an ONNX model: group coupled channels, remove the least important, shrink tensors, "
        "verify, and optionally compile and measure with TVM. `prunec inspect MODEL` lists the groups."))
    _common(p)
    p.add_argument("--ratio", type=_ratio, default=None,
                   help="share of channels to remove per group, in [0,1) (default 0.5; 0 with --sparsity)")
    from .backend.targets import names as target_names

    p.add_argument("--target", choices=["none", *target_names()], default="none",
                   help="compile and measure for this target after pruning (default: none, prune only)")
    p.add_argument("-o", "--outdir", default="prunec_out", help="output folder (default prunec_out)")
    p.add_argument("--criterion", default="auto", choices=["auto", *criteria.CRITERIA], metavar="C",
                   help=criteria.cli_help())
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank channels of all groups together instead of the same ratio per group")
    p.add_argument("--round-to", type=_positive_int, default=None,
                   help="keep a multiple of this many channels (default: 16 for x86, 8 otherwise)")
    p.add_argument("--min-channels", type=_positive_int, default=1, help="never keep fewer channels in a group (default 1)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNormalization into convolutions first")
    p.add_argument("--plan-out", metavar="FILE", help="write the pruning plan (JSON) here")
    p.add_argument("--plan-in", metavar="FILE", help="apply this plan instead of computing one")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _calibration_arguments(p)
    _sparsity_arguments(p)
    try:
        from . import backend
        backend.add_arguments(p)
    except ImportError:
        pass
    return p


def _calibration_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accuracy without training (calibration data)")
    g.add_argument("--calib", metavar="FILE.npz|DIR", help=(
        "unlabeled inputs: an .npz with one array per model input (first axis = samples), or a folder of "
        "images (see --preprocess). Enables data criteria, measured sensitivity and reconstruction"))
    g.add_argument("--preprocess", metavar="SPEC", help=(
        "for an image folder: size=H[xW],mean=M[/M/M],std=S[/S/S],layout=NCHW|NHWC,rgb|bgr[,letterbox]; "
        "pixels are 0..255 before (x-mean)/std (default: the model's size, mean=0, std=255, NCHW, rgb)"))
    g.add_argument("--calib-samples", type=_positive_int, default=512, help="use at most this many samples (default 512)")
    g.add_argument("--calib-mirror", type=_positive_int, metavar="AXIS", help=(
        "also use every sample mirrored along this axis of the model input (3 = width for NCHW, 2 for NHWC): "
        "twice the data for reconstruction, where a mirrored input is a valid one (photos, not text)"))
    g.add_argument("--target-macs", type=_share, metavar="F", help=(
        "keep at most this share of the original MACs (0.5 = 2x fewer), spread over groups by measured "
        "sensitivity (with --calib); replaces --ratio"))
    g.add_argument("--allocation", choices=["auto", "probe", "refit"], default="auto", help=(
        "how --target-macs spreads the cut: probe (per-group sensitivity curves, cheap), refit (greedy search "
        "on pruned and refitted models, measured on held-out samples; small models), auto: refit when its "
        "estimated cost is small (default)"))
    g.add_argument("--protect", dest="protect", action="store_true", default=None,
                   help="keep >= 75%% of stem and head groups (50%% with the refit allocation) and all of groups <= 8 "
                        "channels (default with --target-macs)")
    g.add_argument("--no-protect", dest="protect", action="store_false", help="no stem/head/tiny-group floors")
    g.add_argument("--reconstruct", dest="reconstruct", action="store_true", default=None,
                   help="refit the layers after pruned channels by least squares on the calibration data "
                        "(default when --calib is given)")
    g.add_argument("--no-reconstruct", dest="reconstruct", action="store_false", help="skip reconstruction")
    g.add_argument("--reconstruct-mode", choices=["auto", "sequential", "local"], default="auto",
                   help="sequential: level by level on the pruned model's activations; local: one pass on the "
                        "original's (auto: sequential up to 16 levels)")
    g.add_argument("--steps", type=_positive_int, default=1, help="prune in this many rounds, reconstructing after each")
    g.add_argument("--recover", choices=["auto", "refit", "distill", "none"], default="auto", help=(
        "accuracy recovery with --calib: refit (least squares per layer), distill (refit, then train the pruned "
        "model to reproduce the original's outputs on the calibration inputs; needs jax: pip install "
        "'prunec[distill]'), none; auto: distill when jax is installed, else refit (default)"))
    g.add_argument("--recover-budget", type=_checked(float, lambda v: v > 0, "must be positive"), metavar="SECONDS",
                   help="time budget for distillation (default 600 s); epochs are planned to fit it")
    g.add_argument("--recover-epochs", type=_positive_int, metavar="N",
                   help="distill for exactly N epochs (still stopping early on the held-out error)")


def _layer_share(text: str) -> tuple[str, float]:
    glob, sep, value = text.rpartition("=")
    if not sep or not glob:
        raise argparse.ArgumentTypeError(f"{text!r}: expected GLOB=S (e.g. '/layer4/*=0.8')")
    return glob, _ratio(value)


def _sparsity_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sparsity (zeros inside the weights; after channel pruning when both are asked)")
    g.add_argument("--sparsity", type=_ratio, metavar="S", help=(
        "share of Conv/Gemm/MatMul weights to zero per layer, in [0,1); alone it skips channel pruning "
        "unless --ratio/--target-macs is given too"))
    g.add_argument("--pattern", default="unstructured", metavar="P",
                   help="unstructured, N:M (e.g. 2:4: fixes the share) or block:RxC (e.g. block:1x8, R output "
                        "channels x C inputs) (default unstructured)")
    g.add_argument("--sparsity-criterion", default="auto", choices=["auto", "magnitude", "wanda"],
                   help="magnitude |W|, or wanda |W| x input RMS (needs --calib); auto: wanda with --calib")
    g.add_argument("--sparsity-global", action="store_true",
                   help="one threshold over all layers instead of the same share in each")
    g.add_argument("--sparsity-exclude", action="append", default=[], metavar="GLOB",
                   help="leave dense the layers whose node or weight name matches (repeatable)")
    g.add_argument("--layer-sparsity", action="append", default=[], type=_layer_share, metavar="GLOB=S",
                   help="another share for the layers matching GLOB (repeatable, first match wins)")


def inspect_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prunec inspect", description="List channel groups, why some cannot be pruned, and coverage.")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"prunec: error: {one_line(message, 2000)}", file=sys.stderr)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so that the same cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # signals that arrived during this run


def _on_signal(signum, _frame):
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _interrupted(signum: int) -> int:
    if signum == signal.SIGINT:
        return _fail("interrupted (Ctrl-C)", 130)
    return _fail(f"terminated ({signal.Signals(signum).name})", 128 + signum)


def main(argv: list[str] | None = None) -> int:
    # First thing, before the heavy imports (numpy, onnx, ONNX Runtime take seconds): SIGTERM ends
    # the run like Ctrl-C, with its cleanup and one line.
    previous = {}
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        for sig, handler in previous.items():  # main() called from Python: leave the caller's handlers
            signal.signal(sig, handler)


def _main(argv: list[str]) -> int:
    try:
        if argv and argv[0] == "inspect":
            return _inspect(inspect_parser().parse_args(argv[1:]))
        if argv and argv[0] == "prune":
            argv = argv[1:]
        return _prune(prune_parser().parse_args(argv))
    except PrunecError as exc:
        # a signal inside a C extension can come back as another error (numpy's import turns it
        # into an ImportError): the signal is what happened
        return _interrupted(_received[-1]) if _received else _fail(str(exc))
    except Terminated as exc:
        return _interrupted(exc.signum)
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except BrokenPipeError:
        # `prunec inspect m.onnx | head`: the reader left; say nothing more, like any Unix tool.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except MemoryError:
        return _fail("out of memory; give smaller --input-shape sizes or fewer --calib-samples")
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if _received:
            return _interrupted(_received[-1])
        if os.environ.get("PRUNEC_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {one_line(exc)} "
                     "(set PRUNEC_DEBUG=1 for a traceback)", 3)


def _inspect(args) -> int:
    from .dependency import analyze
    from .graph import load, parse_input_shapes
    from .report import format_inspect, inspect_dict

    model = load(args.model, parse_input_shapes(args.input_shape))
    info = inspect_dict(analyze(model, exclude=args.exclude))
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


def _prune(args) -> int:
    from .graph import parse_input_shapes
    from .pipeline import PruneOptions, prune_file

    sparsity = None
    if args.sparsity is not None or args.pattern != "unstructured":
        from prunec.passes.sparsify import SparsityOptions
        from .sparsity import Pattern

        pattern = Pattern.parse(args.pattern)
        if args.sparsity is None and pattern.fixed_sparsity is None:
            raise PrunecError(f"--pattern {args.pattern} needs --sparsity S (the share of weights to zero)")
        sparsity = SparsityOptions(
            sparsity=args.sparsity if args.sparsity is not None else pattern.fixed_sparsity, pattern=args.pattern,
            criterion=args.sparsity_criterion, global_ranking=args.sparsity_global,
            exclude=args.sparsity_exclude, layer_sparsity=dict(args.layer_sparsity))
    ratio = args.ratio if args.ratio is not None else (0.0 if sparsity is not None else 0.5)
    opts = PruneOptions(
        ratio=ratio, sparsity=sparsity, criterion=args.criterion, round_to=args.round_to, min_keep=args.min_channels,
        global_ranking=args.global_ranking, exclude=args.exclude, input_shapes=parse_input_shapes(args.input_shape),
        fold_bn=args.fold_bn, plan_in=args.plan_in, plan_out=args.plan_out, target=args.target,
        calib=args.calib, preprocess=args.preprocess, calib_samples=args.calib_samples,
        calib_mirror=args.calib_mirror, target_macs=args.target_macs,
        protect=args.protect, reconstruct=args.reconstruct, recon_mode=args.reconstruct_mode, steps=args.steps,
        allocation=args.allocation, recover=args.recover, recover_budget=args.recover_budget,
        recover_epochs=args.recover_epochs)
    quiet = getattr(args, "quiet", False)
    log = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))

    def compile_and_measure(report: dict, pruned: Path, stage: Path) -> None:
        """Runs before anything is published: artifacts go to the run's stage folder."""
        from . import backend

        result = backend.run(backend.BackendOptions.from_args(args), Path(args.model), pruned,
                             report["input_shapes"], stage, log)
        macs_ratio = report["macs"]["before"] / max(report["macs"]["after"], 1)
        result["macs_ratio"] = macs_ratio
        if result.get("speedup") and macs_ratio > 0:  # a model without MACs has no efficiency
            result["efficiency"] = result["speedup"] / macs_ratio
        report.setdefault("targets", {})[args.target] = result

    report = prune_file(args.model, Path(args.outdir), opts, log,
                        finish=compile_and_measure if args.target != "none" else None)
    if args.json:
        from .pipeline import _json_safe

        print(json.dumps(_json_safe(report), indent=1, default=float))
    else:
        print(_summary(report))
    return 0


def _summary(r: dict) -> str:
    p, m, g = r["params"], r["macs"], r["groups"]
    lines = [
        f"pruned {r['input']} -> {r['output']}",
        f"  params {p['before']:,} -> {p['after']:,} ({p['before'] / max(p['after'], 1):.2f}x smaller)",
        f"  MACs   {m['before']:,} -> {m['after']:,} ({m['before'] / max(m['after'], 1):.2f}x fewer)",
        f"  groups {g['pruned']} pruned of {g['prunable']} prunable ({g['total']} total, "
        f"{len(g['skipped'])} skipped; see report.json for reasons)",
        "  verified: onnx.checker passed, ONNX Runtime ran, output shapes unchanged",
    ]
    cal = r.get("calibration") or {}
    sp = r.get("sparsity")
    if sp:
        lines.append(f"  sparsity {sp['pattern']} ({sp['criterion']}{', reconstructed' if sp['reconstructed'] else ''}): "
                     f"{sp['zeros']:,} of {sp['weights']:,} weights in {len(sp['layers'])} layers zero "
                     f"({100 * sp['sparsity']:.1f}%); {len(sp['skipped'])} layers left dense")
    if cal.get("samples"):
        lines.append(f"  criterion {r.get('criterion')}; calibration {cal['samples']} samples from {cal['source']}; "
                     f"relative output error {cal.get('output_error', float('nan')):.4g} on held-out samples")
    elif cal.get("note"):
        lines.append(f"  {cal['note']}")
    for target, t in r.get("targets", {}).items():
        if t.get("measured"):
            lines.append(f"  {target}: speedup {t.get('speedup', 0):.2f}x (MACs {t['macs_ratio']:.2f}x)")
        else:
            lines.append(f"  {target}: {t.get('reason', 'compiled, not measured')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
