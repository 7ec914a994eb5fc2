"""CLI: ``python -m models.build NAME [NAME...|all] -o OUTDIR`` writes OUTDIR/NAME.onnx."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from .common import count_params
from .zoo import BUILDERS, LARGE, build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.build", description=__doc__)
    p.add_argument("names", nargs="+", metavar="NAME",
                   help=f"model names or 'all' (all but {', '.join(sorted(LARGE))}); known: {', '.join(BUILDERS)}")
    p.add_argument("-o", "--outdir", default="models/onnx", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    names: list[str] = []
    for n in args.names:
        names += [k for k in BUILDERS if k not in LARGE] if n == "all" else [n]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(BUILDERS)}")

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for n in dict.fromkeys(names):  # dedupe, keep order
        m = build(n, seed=args.seed)
        path = out / f"{n}.onnx"
        onnx.save_model(m, path)
        print(f"{n:28s} {count_params(m):>11,d} params  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
