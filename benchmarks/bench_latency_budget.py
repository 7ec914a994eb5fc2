"""--target-latency against --target-macs on real models: measured TVM latency and accuracy proxy.

Each model is pruned with calibration data and least-squares refit (`--recover refit`) once per budget
(one calibrated flow for all, as `prunec sweep`: statistics, scores and probes are measured once):
`--target-macs F` for each F in --macs, `--target-latency F` for each F in --latency. Then the original
and every pruned model are compiled for x86 (zero trials) and timed as the latency budget times them
(prunec/backend/latency_table.py ModelTimer: one runtime thread, the calling thread's CPU time,
interleaved rounds of >= 0.1 s each, fastest round; the median round is printed beside it; the host
is shared, so the load average is printed before and after). Accuracy proxies: the
held-out output error against the original (report.json calibration.output_error) and the task score
(YOLOv8n: F1 of the detections against the original's; recognizer: exact match with the original's text).

    PYTHONPATH=. python benchmarks/bench_latency_budget.py --models yolo --macs 0.5 --latency 0.6,0.5 \
        --tuning-db DIR [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shares(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    import prunec
    from benchmarks.bench_recovery import MODELS
    from prunec.backend.options import BackendOptions
    from dataclasses import replace

    from prunec.macs import graph_macs
    from prunec.passes.prune import _Calibrated
    from prunec.pipeline import PruneOptions
    from prunec.recovery.latency import LatencyBudget

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="yolo")
    ap.add_argument("--macs", type=_shares, default=[0.5])
    ap.add_argument("--latency", type=_shares, default=[0.6, 0.5])
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, help="folder to keep the pruned models in (for timing them again)")
    ap.add_argument("--time-again", default=None, metavar="DIR", help="only time again what --keep DIR kept")
    a = ap.parse_args(argv)
    if a.time_again:
        return time_again(Path(a.time_again), a.tuning_db, a.rounds)
    backend = BackendOptions(target="x86", tuning_db=a.tuning_db)
    results = {}
    for key in a.models.split(","):
        task = MODELS[key](a.calib, a.eval)
        print(f"== {task.name}", flush=True)
        original = prunec.load(task.path, input_shapes=task.shape)
        ref = task.predict(original)
        runs = [(f"macs {f:g}", f, None) for f in a.macs] + [(f"latency {f:g}", None, f) for f in a.latency]
        rows = []
        base = PruneOptions(calib=task.calib, recover="refit", target="x86", input_shapes=task.shape,
                            target_macs=0.5)
        # one calibrated flow for every budget (as prunec sweep): data, scores and probes measured once
        flow = _Calibrated(original, base, lambda m: print("  " + m, flush=True))
        analysis = prunec.analyze(original)
        timer = LatencyBudget(replace(base, target_macs=None, target_latency=1.0, backend=backend))
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            keep = Path(a.keep, key) if a.keep else Path(tmp)
            keep.mkdir(parents=True, exist_ok=True)
            paths = {"original": Path(task.path)}
            loaded = {}
            for name, macs_share, latency_share in runs:
                t0 = time.perf_counter()
                flow.opts = replace(base, target_macs=macs_share, target_latency=latency_share,
                                    backend=backend if latency_share else None)
                flow.latency = None
                if latency_share:
                    timer.share, flow.latency = latency_share, timer
                pruned, _, entries = flow.run(analysis)
                secs = time.perf_counter() - t0
                path = keep / (name.replace(" ", "_") + ".onnx")
                prunec.save(pruned, path)
                paths[name] = path
                got = task.predict(pruned)
                macs0 = graph_macs(original.graph, original.shapes)
                macs1 = graph_macs(pruned.graph, pruned.shapes)
                row = {"run": name, "macs": macs1, "macs_share": macs1 / macs0,
                       "output_error": entries["calibration"]["output_error"], "score": float(task.score(ref, got)),
                       "prune_s": round(secs, 1), "latency_budget": entries.get("latency_budget")}
                print(f"  {name}: MACs share {row['macs_share']:.3f}, output error {row['output_error']:.4f}, "
                      f"score {row['score']:.3f}, {secs:.0f} s", flush=True)
                if row["latency_budget"]:
                    lb = row["latency_budget"]
                    print(f"    predicted {lb.get('predicted_ms')} ms, measured {lb.get('measured_ms')} ms "
                          f"(original {lb.get('original_ms')} ms; table {lb['table']})", flush=True)
                rows.append(row)
                if latency_share:  # compiled and loaded by the budget already: no second compile
                    loaded[name] = timer.timer.runs["pruned"]
            loaded["original"] = timer.timer.runs["original"]
            (load0, load1), timed = time_interleaved(paths, task.shape, a.tuning_db, a.rounds, loaded)
            (keep / "rows.json").write_text(json.dumps(rows, default=str))
        results[key] = table(task.name, rows, timed, load0, load1, a.rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def time_interleaved(paths: dict, shape: dict, tuning_db, rounds: int, loaded: dict | None = None):
    """TVM x86 latency of each model as the latency budget times it (one thread, thread CPU time,
    interleaved rounds): {name: {"fastest", "median", "rounds"}}; the load average before and after.
    loaded: {name: one call} of models compiled already (the budget's), the rest are compiled here."""
    import statistics

    import onnx

    from prunec.backend.latency_table import ModelTimer
    from prunec.backend.options import BackendOptions

    timer = ModelTimer(BackendOptions(target="x86", tuning_db=tuning_db).check())
    for name, path in paths.items():
        if loaded and name in loaded:
            timer.runs[name] = loaded[name]
        else:
            timer.add(name, onnx.load(str(path)), shape)
    load0 = os.getloadavg()
    timer.time(rounds=rounds)
    load1 = os.getloadavg()
    timed = {name: {"fastest": min(ms), "median": statistics.median(ms), "rounds": [round(x, 3) for x in ms]}
             for name, ms in timer.rounds.items()}
    if timer.calling_thread_share < 0.9:
        print(f"  warning: {1 - timer.calling_thread_share:.0%} of the CPU time ran outside the calling thread")
    return (load0, load1), timed


def table(title: str, rows: list, timed: dict, load0, load1, rounds: int) -> dict:
    """Print (and return) each run's TVM ms and share of the original's beside its accuracy proxies."""
    base, base_med = timed["original"]["fastest"], timed["original"]["median"]
    print(f"  TVM x86, 1 thread, thread CPU time: fastest (median) of {rounds} interleaved rounds; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"  {'run':<14} {'ms':>8} {'share':>6} {'med sh':>6} {'pred sh':>7} {'MACs sh':>7} {'out err':>8} {'score':>6}")
    print(f"  {'original':<14} {base:8.3f} {1:6.3f} {1:6.3f} {'':>7} {1:7.3f} {0:8.4f} {1:6.3f}")
    for row in rows:
        t = timed[row["run"]]
        pred = (row.get("latency_budget") or {}).get("predicted_share")
        row.update(tvm_ms=t["fastest"], tvm_share=t["fastest"] / base, tvm_median_share=t["median"] / base_med,
                   round_ms=t["rounds"])
        print(f"  {row['run']:<14} {t['fastest']:8.3f} {row['tvm_share']:6.3f} {row['tvm_median_share']:6.3f} "
              f"{'' if pred is None else f'{pred:.3f}':>7} {row['macs_share']:7.3f} "
              f"{row['output_error']:8.4f} {row['score']:6.3f}")
    return {"model": title, "original_ms": base, "original_rounds": timed["original"]["rounds"],
            "load": [load0[0], load1[0]], "rows": rows}


def time_again(folder: Path, tuning_db, rounds: int) -> int:
    """--time-again DIR: the models a --keep DIR run kept, timed again (original first)."""
    from benchmarks.bench_recovery import MODELS

    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        task_cls = MODELS[sub.name]
        rows = json.loads((sub / "rows.json").read_text())
        path, shape = _task_file(task_cls)
        paths = {"original": path, **{r["run"]: sub / (r["run"].replace(" ", "_") + ".onnx") for r in rows}}
        (load0, load1), timed = time_interleaved(paths, shape, tuning_db, rounds)
        print(f"== {task_cls.name}")
        table(task_cls.name, rows, timed, load0, load1, rounds)
    return 0


def _task_file(task_cls):
    from models.fetch_pypi import ddddocr_path, nudenet_yolov8n_path

    if task_cls.__name__ == "YOLOv8n":
        return nudenet_yolov8n_path(), {"images": [1, 3, 320, 320]}
    return ddddocr_path("common.onnx"), {"input1": [1, 1, 64, 192]}


if __name__ == "__main__":
    sys.exit(main())
