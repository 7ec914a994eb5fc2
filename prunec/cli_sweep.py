"""`prunec sweep`: its options and the command (the work is prunec.sweep)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .cli_args import Parser as _Parser, common as _common, positive_int as _positive_int, verbosity as _verbosity
from .errors import PrunecError
from .provenance import command_line


def sweep_parser() -> argparse.ArgumentParser:
    from . import criteria

    p = _Parser(prog="prunec sweep", description=(
        "Prune at several MACs budgets (least-squares refit, as `prunec MODEL --calib C --target-macs F "
        "--recover refit`) and print, for each, the MACs and parameters left, the held-out output error "
        "against the original and the ONNX Runtime latency. Writes nothing unless asked (--plot, --json)."))
    _common(p)
    _verbosity(p)
    p.add_argument("--calib", metavar="FILE.npz|DIR", required=True,
                   help="unlabeled inputs, as for prunec prune (the error of each budget is measured on them)")
    p.add_argument("--preprocess", metavar="SPEC", help="for an image folder, as for prunec prune")
    p.add_argument("--calib-samples", type=_positive_int, default=512, help="use at most this many samples (default 512)")
    p.add_argument("--calib-mirror", type=_positive_int, metavar="AXIS", help="as for prunec prune")
    p.add_argument("--targets", default="0.9,0.8,0.67,0.5,0.4", metavar="F,F,...",
                   help="shares of the original MACs to keep (default 0.9,0.8,0.67,0.5,0.4)")
    p.add_argument("--criterion", default="auto", choices=["auto", *criteria.CRITERIA], metavar="C",
                   help="channel importance, as for prunec prune")
    p.add_argument("--round-to", type=_positive_int, default=None, help="keep a multiple of this many channels (default 8)")
    p.add_argument("--min-channels", type=_positive_int, default=1, help="never keep fewer channels in a group (default 1)")
    p.add_argument("--allocation", choices=["auto", "probe", "refit"], default="auto", help="as for prunec prune")
    p.add_argument("--no-reconstruct", dest="reconstruct", action="store_false", default=None,
                   help="measure without the least-squares refit")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the ONNX Runtime timing")
    p.add_argument("--threads", type=_positive_int, default=1, help="ONNX Runtime threads for the timing (default 1)")
    p.add_argument("--plot", metavar="FILE.png", help="also plot error against MACs and latency (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="also write the points as JSON")
    return p


def _targets(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PrunecError(f"--targets {text!r}: give shares like 0.8,0.67,0.5") from None
    return values


def sweep_command(args) -> int:
    from . import progress
    from .graph import parse_input_shapes
    from .pipeline import PruneOptions, load_for
    from .sweep import format_table, plot, sweep, to_json

    targets = _targets(args.targets)
    for out in (args.plot, args.json):
        if out and not Path(out).resolve().parent.is_dir():
            raise PrunecError(f"{out}: its folder does not exist; create it or write elsewhere")
    opts = PruneOptions(ratio=0.0, criterion=args.criterion, round_to=args.round_to, min_keep=args.min_channels,
                        exclude=args.exclude, input_shapes=parse_input_shapes(args.input_shape), calib=args.calib,
                        preprocess=args.preprocess, calib_samples=args.calib_samples, calib_mirror=args.calib_mirror,
                        allocation=args.allocation, reconstruct=args.reconstruct,
                        recover="none" if args.reconstruct is False else "refit", command=command_line())
    if not Path(args.model).is_file():
        raise PrunecError(f"{args.model}: no such file")
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    progress.configure(progress.QUIET if args.quiet else progress.VERBOSE if args.verbose else progress.NORMAL)
    model, opts = load_for(Path(args.model), opts)
    points = sweep(model, opts, targets, latency=args.latency, threads=args.threads, log=log)
    print(format_table(points))
    if args.json:
        _write_atomic(Path(args.json), json.dumps(to_json(points), indent=1).encode())
    if args.plot:
        with tempfile.TemporaryDirectory(dir=Path(args.plot).resolve().parent, prefix=".prunec-") as tmp:
            os.replace(plot(points, Path(tmp) / "sweep.png"), args.plot)
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
