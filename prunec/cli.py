"""Command line: `prunec prune|inspect|compile|report ...`; `prunec MODEL.onnx [options]` is `prunec prune`.

Exit codes: 0 done, 2 bad input or usage (one line on stderr naming the problem and the fix),
3 internal error (a bug in prunec), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .cli_args import Parser as _Parser, checked as _checked, common as _common
from .cli_args import positive_int as _positive_int, steps as _steps, ratio as _ratio, share as _share, verbosity as _verbosity
from .errors import PrunecError, one_line
from .provenance import command_line


COMMANDS = {
    "prune": "prune a model (the default: `prunec MODEL ...` is `prunec prune MODEL ...`)",
    "inspect": "list channel groups, their nodes, why some cannot be pruned, and coverage",
    "compile": "compile and measure an original/pruned pair with TVM (OUTDIR of a prune run, or two files)",
    "report": "write OUTDIR/report.html, a self-contained page with charts, from OUTDIR/report.json",
    "sweep": "held-out output error, MACs and latency over a range of MACs budgets, before choosing one",
}


def prune_parser() -> argparse.ArgumentParser:
    from . import criteria

    p = _Parser(prog="prunec prune", description=(
        "Prune an ONNX model: group coupled channels, remove the least important, shrink tensors, "
        "verify, and optionally compile and measure with TVM. `prunec inspect MODEL` lists the groups."),
        epilog="exit codes: 0 done, 2 bad input, 3 internal error, 130 interrupted")
    _common(p)
    _verbosity(p)
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
    p.add_argument("--html", action="store_true", help="also write OUTDIR/report.html (charts need the `report` extra)")
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
        "unlabeled inputs: an .npz with one array per model input (first axis = samples; several named "
        "NAME__0, NAME__1, ... for samples of different shapes where the model's dims are open), or a folder "
        "of images (see --preprocess). Enables data criteria, measured sensitivity and reconstruction"))
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
    g.add_argument("--target-latency", type=_share, metavar="F", help=(
        "keep at most this share of the original model's latency measured on the target (x86: this host; "
        "default target x86): each layer is timed at kept channel counts (a table cached beside the tuning "
        "database), the cut goes where latency falls, and counts step to those the kernels run fastest at "
        "unless --round-to is given; replaces --ratio"))
    g.add_argument("--allocation", choices=["auto", "probe", "refit"], default="auto", help=(
        "how --target-macs spreads the cut: probe (per-group sensitivity curves, cheap), refit (greedy search "
        "on pruned and refitted models, measured on held-out samples; small models), auto: refit when its "
        "estimated cost is small (default)"))
    g.add_argument("--protect", dest="protect", action="store_true", default=None,
                   help="keep >= 75%% of stem and head groups (50%% when the allocation measures after refit: the refit "
                        "search, or probes with reconstruction on) and all of groups <= 8 channels (default with --target-macs)")
    g.add_argument("--no-protect", dest="protect", action="store_false", help="no stem/head/tiny-group floors")
    g.add_argument("--reconstruct", dest="reconstruct", action="store_true", default=None,
                   help="refit the layers after pruned channels by least squares on the calibration data "
                        "(default when --calib is given)")
    g.add_argument("--no-reconstruct", dest="reconstruct", action="store_false", help="skip reconstruction")
    g.add_argument("--reconstruct-mode", choices=["auto", "sequential", "local"], default="auto",
                   help="sequential: level by level on the pruned model's activations (deep models in 16 "
                        "passes of consecutive levels); local: one pass on the original's (auto: sequential)")
    g.add_argument("--steps", type=_steps, default=None, metavar="N|auto", help=(
        "prune in this many rounds, reconstructing after each; auto (default): two when a --target-macs budget "
        "keeps under 0.6 of the MACs with calibration data, one otherwise, and one when a second would leave "
        "distillation under 40%% of --recover-budget"))
    g.add_argument("--recover", choices=["auto", "refit", "distill", "none"], default="auto", help=(
        "accuracy recovery with --calib: refit (least squares per layer), distill (refit, then train the pruned "
        "model to reproduce the original's outputs on the calibration inputs; needs jax: pip install "
        "'prunec[distill]'), none; auto: distill when jax is installed, else refit (default)"))
    g.add_argument("--recover-budget", type=_checked(float, lambda v: v > 0, "must be positive"), metavar="SECONDS",
                   help="time budget for the whole recovery (default 600 s): the plan, the refit and distillation, "
                        "which gets what the others left (skipped when under a tenth is left)")
    g.add_argument("--recover-epochs", type=_positive_int, metavar="N",
                   help="distill for exactly N epochs (still stopping early on the held-out error)")
    g.add_argument("--factorize", nargs="?", const=2e-3, default=None, metavar="TOL",
                   type=_checked(float, lambda v: 0 < v < 1, "must be in (0, 1)"), help=(
        "before pruning, replace large linear layers (a classifier over thousands of classes) by two thin ones "
        "of the smallest rank whose held-out error stays within TOL of their outputs' variance (default 2e-3); "
        "needs --calib; --target-macs counts from the model as given"))
    g.add_argument("--quantize", choices=["int8"], help=(
        "last step: quantize the pruned model to int8 with ONNX Runtime's static quantization (QDQ, per-channel "
        "weights, activation ranges from --calib, which it needs); refused if outputs move beyond a tolerance"))


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
    p = _Parser(prog="prunec inspect", description="List channel groups, the nodes they touch, why some cannot be "
                "pruned, and coverage.")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def compile_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prunec compile", description=(
        "Compile and measure an original and a pruned model with TVM, with identical settings. "
        "SOURCE is the OUTDIR of a prune run (its report.json names both models; the result is added to it) "
        "or two files, ORIGINAL.onnx PRUNED.onnx."))
    p.add_argument("source", nargs="+", metavar="SOURCE", help="OUTDIR, or ORIGINAL.onnx PRUNED.onnx")
    from .backend.targets import names as target_names
    p.add_argument("--target", choices=target_names(), required=True, help="what to compile for")
    p.add_argument("-o", "--outdir", help="output folder (default: SOURCE when it is an OUTDIR, else prunec_out)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="the size to compile an input with dynamic dims at (default: the prune run's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", action="store_true", help="also write OUTDIR/report.html")
    _verbosity(p)
    from . import backend
    backend.add_arguments(p)
    return p


def report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prunec report", description=(
        "Write a self-contained HTML page (charts embedded) from the report.json of a prune or compile run."))
    p.add_argument("outdir", metavar="OUTDIR", help="a folder holding report.json")
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page (default OUTDIR/report.html)")
    return p


def top_help() -> str:
    from .version import __version__

    lines = [f"prunec {__version__}: a pruning compiler for ONNX models", "",
             "usage: prunec COMMAND [options]   (prunec COMMAND -h for each command's options)",
             "       prunec MODEL.onnx [options]   (same as prunec prune)", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "exit codes: 0 done, 2 bad input or usage, 3 internal error (a bug), 130 interrupted"]
    return "\n".join(lines)


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


@contextlib.contextmanager
def _run_output(args, outdir: Path):
    """Progress at the chosen verbosity; without -v, what TVM and ONNX Runtime print goes to
    OUTDIR/prunec.log (kept only if something was written there)."""
    from . import progress

    level = progress.QUIET if args.quiet else progress.VERBOSE if args.verbose else progress.NORMAL
    progress.configure(level)
    if args.verbose:
        yield None
        return
    fd, tmp = tempfile.mkstemp(prefix="prunec-", suffix=".log")
    os.close(fd)
    tmp = Path(tmp)
    try:
        with progress.library_logs_to(tmp):
            yield tmp
    finally:
        if tmp.exists():  # a failed run that wrote no OUTDIR leaves nothing behind (errors stay one line)
            if outdir.is_dir():
                shutil.move(str(tmp), outdir / "prunec.log")
            else:
                tmp.unlink()


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
        if not argv or argv[0] in ("-h", "--help"):
            print(top_help())
            return 0 if argv else 2
        if argv[0] in ("--version", "-V"):
            from .version import __version__
            print(f"prunec {__version__}")
            return 0
        command = argv[0] if argv[0] in COMMANDS else "prune"
        rest = argv[1:] if argv[0] in COMMANDS else argv
        if command == "inspect":
            return _inspect(inspect_parser().parse_args(rest))
        if command == "compile":
            return _compile(compile_parser().parse_args(rest))
        if command == "report":
            return _report(report_parser().parse_args(rest))
        if command == "sweep":
            from .cli_sweep import sweep_command, sweep_parser
            return sweep_command(sweep_parser().parse_args(rest))
        return _prune(prune_parser().parse_args(rest))
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
        target_latency=args.target_latency, backend=_latency_backend(args),
        protect=args.protect, reconstruct=args.reconstruct, recon_mode=args.reconstruct_mode, steps=args.steps,
        allocation=args.allocation, recover=args.recover, recover_budget=args.recover_budget,
        recover_epochs=args.recover_epochs, factorize=args.factorize, quantize=args.quantize,
        command=command_line())
    outdir = Path(args.outdir)
    if args.target != "none":
        from .backend import toolchain
        toolchain.check(args.target)  # before pruning: a missing cross linker fails in a second, not after

    def compile_and_measure(report: dict, pruned: Path, stage: Path) -> None:
        """Runs before anything is published: artifacts go to the run's stage folder."""
        _compile_into(report, args, Path(args.model), pruned, stage)

    with _run_output(args, outdir):
        from . import progress

        report = prune_file(args.model, outdir, opts, progress.info,
                            finish=compile_and_measure if args.target != "none" else None)
        if args.html:  # a view of the published report.json, written beside it
            report["html"] = str(_write_html(outdir))
    _print_result(report, args)
    return 0


def _latency_backend(args):
    """--target-latency times on the --target (x86 when none is given) with its backend options."""
    if args.target_latency is None:
        return None
    from .backend import BackendOptions

    return BackendOptions.from_args(args)


def _compile_into(report: dict, args, original: Path, pruned: Path, outdir: Path) -> None:
    from . import backend, progress

    result = backend.run(backend.BackendOptions.from_args(args), original, pruned, report["input_shapes"], outdir,
                         progress.info)
    if isinstance(result.get("target"), str):  # TVM's target as an object, not JSON inside a string
        try:
            result["target"] = json.loads(result["target"])
        except ValueError:
            result["target"] = {"kind": args.target, "description": result["target"]}
    macs = report.get("macs")
    if macs:
        result["macs_ratio"] = macs["before"] / max(macs["after"], 1)
        if result.get("speedup") and result["macs_ratio"] > 0:  # a model without MACs has no efficiency
            result["efficiency"] = result["speedup"] / result["macs_ratio"]
    result["timing_noise"] = timing_noise(result)
    report.setdefault("targets", {})[args.target] = result


NOISY_SPREAD = 1.5  # slowest / fastest round median above which a figure is flagged as uncertain


def timing_noise(result: dict) -> dict:
    """Spread of each timed model's round medians (slowest / fastest round): one round slower than
    another by more than NOISY_SPREAD means the host was busy, whatever the best round says."""
    spread = {}
    for name, m in (result.get("models") or {}).items():
        for key, label in (("latency_ms", f"TVM {name}"), ("onnxruntime_latency_ms", f"ONNX Runtime {name}")):
            rounds = (m.get(key) or {}).get("round_medians") or []
            if len(rounds) >= 2 and min(rounds) > 0:
                spread[label] = round(max(rounds) / min(rounds), 3)
    return {"spread": spread, "threshold": NOISY_SPREAD, "noisy": any(v > NOISY_SPREAD for v in spread.values())}


def _compile(args) -> int:
    from .graph import load, parse_input_shapes
    from .pipeline import write_report
    from .report import new_report

    first = Path(args.source[0])
    if len(args.source) == 1 and first.is_dir():
        path = first / "report.json"
        if not path.is_file():
            raise PrunecError(f"{first} has no report.json: give the OUTDIR of a prune run, or ORIGINAL.onnx PRUNED.onnx")
        report = _read_report(path)
        original, pruned = Path(report["input"]), Path(report["output"])
        outdir = Path(args.outdir or first)
        if args.input_shape:
            report["input_shapes"] = load(original, parse_input_shapes(args.input_shape)).input_shapes
    elif len(args.source) == 2:
        original, pruned = Path(args.source[0]), Path(args.source[1])
        outdir = Path(args.outdir or "prunec_out")
        model = load(original, parse_input_shapes(args.input_shape))
        load(pruned, model.input_shapes)  # a bad file fails here, in one line
        report = new_report(original=str(original), pruned=str(pruned), input_shapes=model.input_shapes,
                            command=command_line())
    else:
        raise PrunecError("prunec compile takes OUTDIR (of a prune run) or ORIGINAL.onnx PRUNED.onnx")
    for p in (original, pruned):
        if not p.is_file():
            raise PrunecError(f"{p}: no such file")
    from .backend import toolchain
    toolchain.check(args.target)
    with _run_output(args, outdir):
        outdir.mkdir(parents=True, exist_ok=True)
        _compile_into(report, args, original, pruned, outdir)
        write_report(report, outdir)
        if args.html:
            report["html"] = str(_write_html(outdir))
            write_report(report, outdir)
    _print_result(report, args)
    return 0


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PrunecError(f"{path}: not a readable report.json ({type(exc).__name__})") from None
    if not isinstance(report, dict) or "input" not in report:
        raise PrunecError(f"{path}: not a prunec report.json")
    return report


def _report(args) -> int:
    outdir = Path(args.outdir)
    path = outdir / "report.json" if outdir.is_dir() else outdir
    if not path.is_file():
        raise PrunecError(f"{outdir}: no report.json there; run `prunec MODEL -o {outdir}` first")
    out = _write_html(path.parent, Path(args.output) if args.output else None)
    print(out)
    return 0


def _write_html(outdir: Path, output: Path | None = None) -> Path:
    from .html_report import write_html

    return write_html(_read_report(outdir / "report.json"), output or outdir / "report.html")


def _print_result(report: dict, args) -> None:
    if args.json:
        from .pipeline import _json_safe

        print(json.dumps(_json_safe(report), indent=1, default=float))
    else:
        print(_summary(report))


def _summary(r: dict) -> str:
    lines = []
    if "groups" in r:
        p, m, g = r["params"], r["macs"], r["groups"]
        lines += [
            f"pruned {r['input']} -> {r['output']}",
            f"  params {p['before']:,} -> {p['after']:,} ({p['before'] / max(p['after'], 1):.2f}x smaller)",
            f"  MACs   {m['before']:,} -> {m['after']:,} ({m['before'] / max(m['after'], 1):.2f}x fewer)"
            + (f" at input shape {_shapes_text(r['input_shapes'])}" if r.get("dynamic_dims") else ""),
            f"  groups {g['pruned']} pruned of {g['prunable']} prunable ({g['total']} total, "
            f"{len(g['skipped'])} skipped; see report.json for reasons)",
            "  verified: onnx.checker passed, ONNX Runtime ran, output shapes unchanged"
            + (" (also at another input size)" if (r["verify"].get("other_input_size") or {}).get("checked") else ""),
        ]
        cal = r.get("calibration") or {}
        sp = r.get("sparsity")
        if sp:
            lines.append(f"  sparsity {sp['pattern']} ({sp['criterion']}{', reconstructed' if sp['reconstructed'] else ''}): "
                         f"{sp['zeros']:,} of {sp['weights']:,} weights in {len(sp['layers'])} layers zero "
                         f"({100 * sp['sparsity']:.1f}%); {len(sp['skipped'])} layers left dense")
        qz = r.get("quantize")
        if qz:
            worst = max((e["rel_rms"] for e in qz["output_error_vs_float"].values()), default=0.0)
            lines.append(f"  quantized to {qz['format']} (QDQ, ONNX Runtime static, {qz['calibration_samples']} samples): "
                         f"outputs within {worst:.3g} relative RMS of the float model on {qz['check_samples']} held-out "
                         f"samples; file {qz['size_bytes']['float']:,} -> {qz['size_bytes']['int8']:,} bytes")
        if cal.get("samples"):
            lines.append(f"  criterion {r.get('criterion')}; calibration {cal['samples']} samples from {cal['source']}; "
                         f"relative output error {cal.get('output_error', float('nan')):.4g} on held-out samples")
        elif cal.get("note"):
            lines.append(f"  {cal['note']}")
    else:
        lines.append(f"compiled {r['input']} and {r['output']}")
    for target, t in r.get("targets", {}).items():
        if t.get("measured"):
            macs = f" (MACs {t['macs_ratio']:.2f}x)" if "macs_ratio" in t else ""
            lines.append(f"  {target}: speedup {t.get('speedup', 0):.2f}x{macs}")
            noise = t.get("timing_noise") or {}
            if noise.get("noisy"):
                worst = max(noise["spread"].items(), key=lambda kv: kv[1])
                lines.append(f"  {target}: timings are uncertain: the host was busy (round medians of {worst[0]} "
                             f"spread {worst[1]:.2f}x); rerun on a quiet machine or with more --rounds")
        else:
            lines.append(f"  {target}: {t.get('reason', 'compiled, not measured')}")
    if r.get("html"):
        lines.append(f"  report: {r['html']}")
    return "\n".join(lines)


def _shapes_text(shapes: dict) -> str:
    return ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items())


def run() -> None:
    """The `prunec` command: main(), then exit with its code.

    Why not plain sys.exit: a Ctrl-C that lands inside code Python runs through exec() (dataclass
    and namedtuple creation during a lazy import) leaves a flag in the interpreter that makes it
    kill itself with SIGINT at exit, after the run has already cleaned up and said so: the exit
    status would be -2 instead of 130. After an interrupt there is nothing left to finalize."""
    code = main()
    if code in _SIGNAL_EXITS:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


_SIGNAL_EXITS = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP}


if __name__ == "__main__":
    run()
