"""Pruning speedup on x86: TVM and ONNX Runtime, original vs prunec-pruned, realistic models.

Builds the pairs itself (cached under --workdir): ResNet-18 at 224 (widths 64..512),
MobileNetV2 at 224 (the real width table, width 1.0), the real YOLOv8n at 320 (nudenet
320n.onnx) and ddddocr 1.6.1's text recognizer (common.onnx: conv stem, bidirectional LSTM,
8210-class head) on a 64x256 line; on request (--models) also ddddocr's character detector
(common_det.onnx, 416x416), PP-OCRv4's recognizer (ppocr_rec: SVTR attention, 48x320) and DB
text detector (ppocr_det, 480x480) from RapidOCR 1.4.4, and the synthetic ViT of models/vit.py
(vit: 224x224, patch 16, dim 192, 3 heads, depth 4); each pruned by prunec's own pipeline
(PruneOptions(ratio, target="x86")). Then, for every pair, at 0 tuning trials and (with
--budget N) after tuning with N trials per pair (N/2 per model, one shared persistent
database), prints one table:

  model, MACs ratio (orig/pruned), ORT orig/pruned ms, OpenVINO orig/pruned ms (f32), TVM
  orig/pruned ms, TVM speedup, efficiency (TVM speedup / MACs ratio), TVM-pruned vs ORT-orig
  (>1: TVM pruned is faster), TVM-orig vs OpenVINO-orig.

Compile seconds are each model's whole compile and export (`compile_s`, wall time; the
process's CPU seconds, all threads, beside the phases: on a shared host the wall time says as
much about the other jobs as about the compiler), then per phase: fuse
(Relax passes, compile-time weight transforms), schedule (prunec's rules), relax_build, kernels
(TIR and LLVM, only the kernels not cached yet: the pruned model reuses the original's; at 0
trials every row starts from an empty kernel cache), export (weights and link).

OpenVINO (`pip install 'prunec[bench]'`; never a runtime dependency of prunec) runs on the CPU
with f32 forced (INFERENCE_PRECISION_HINT=f32: its default on CPUs with AVX512-BF16 or AMX is
bf16, not like for like), the same thread count, its outputs checked against ONNX Runtime's;
without it its columns show "-".

  python benchmarks/bench_speedup.py [--models resnet18,mobilenetv2,yolov8n,ddddocr] [--ratio 0.5]
      [--budget 64] [--threads 2] [--repeat 3] [--rounds 8] [--tuning-db DIR] [--json out.json]

Timing (as `prunec --target x86` does it): the runs of a row (ORT, OpenVINO and TVM, original
and pruned) are timed in --rounds interleaved rounds of --repeat samples of >= 200 ms, and each
figure is the median of its best round (prunec.backend.measure.timed_rounds says why). Many
short rounds rather than a few long ones: on a shared VM the host's slow spells last seconds,
and each model needs one round outside them.

Any other pair of ONNX files (e.g. a model and what `prunec` made of it) with --pair, which
replaces the built-in models (repeatable; --shape NAME=D0,D1,.. fixes dynamic input dims):

  python benchmarks/bench_speedup.py --pair model.onnx out/model.pruned.onnx [--budget 64]

Comparing two versions of the compiler (a schedule change) on a busy host: separate runs swing
more than most changes do, so keep each version's compiled libraries (--keep-libs DIR, run once
per version) and time all of them in one process, in alternation (benchmarks/alternate.py):

  python benchmarks/bench_speedup.py --models yolov8n --keep-libs out/libs-before   # old code
  python benchmarks/bench_speedup.py --models yolov8n --keep-libs out/libs-after    # new code
  python benchmarks/bench_speedup.py --compare-libs out/libs-before out/libs-after \
      [--threads 1] [--rounds 15]

--compare-libs compiles nothing: it prints every library's fastest and median round (1 thread:
thread CPU time; more: wall time), each directory's speedup and efficiency (of the fastest
rounds, the median rounds, and paired: original / pruned within each round, the median over
rounds, which a host that runs in slow and fast phases moves least), and each library
against the same one in the first directory (outputs checked against it too). With
--runtimes onnxruntime,openvino, ONNX Runtime and OpenVINO (f32) run the ONNX files the first
directory's libraries were compiled from in the same rounds (their rows' "vs first" is the
runtime's time over that library's: above 1, TVM is faster). On one thread both run in the
calling thread, so thread CPU time compares all three on a busy host:

  python benchmarks/bench_speedup.py --compare-libs out/libs-after \
      --runtimes onnxruntime,openvino --threads 1 --rounds 9
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

from prunec import backend  # noqa: E402
from prunec.backend.measure import paired_ratio  # noqa: E402

# MobileNetV2 (Sandler et al. 2018), width 1.0: (expand t, out channels c, repeats n, stride s)
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))


# --models accepts these; the default list stays the first four (the CI/compare baseline)
MODELS = ("resnet18", "mobilenetv2", "yolov8n", "ddddocr", "ddddocr_det", "ppocr_rec", "ppocr_det",
          "vit")


def _original(name: str):
    """(ONNX ModelProto, input shapes) of a benchmark model."""
    import onnx

    if name == "resnet18":
        from models.resnet import resnet_basic

        return resnet_basic((2, 2, 2, 2), (64, 128, 256, 512), image=224, num_classes=1000), \
            {"input": [1, 3, 224, 224]}
    if name == "mobilenetv2":
        from models.mobilenet import mobilenetv2

        return mobilenetv2(image=224, num_classes=1000, settings=MBV2_SETTINGS, stem=32,
                           head=1280), {"input": [1, 3, 224, 224]}
    if name == "yolov8n":
        from models.fetch_pypi import nudenet_yolov8n_path

        return onnx.load(str(nudenet_yolov8n_path())), {"images": [1, 3, 320, 320]}
    if name == "ddddocr":  # conv stem, bidirectional LSTM (lowered before TVM's import), CTC head
        from models.fetch_pypi import ddddocr_path

        return onnx.load(str(ddddocr_path("common.onnx"))), {"input1": [1, 1, 64, 256]}
    if name == "ddddocr_det":  # YOLOX-style character detector
        from models.fetch_pypi import ddddocr_path

        return onnx.load(str(ddddocr_path("common_det.onnx"))), {"images": [1, 3, 416, 416]}
    if name in ("ppocr_rec", "ppocr_det"):
        # PP-OCRv4: the SVTR recognizer (conv stem, attention blocks with LayerNorm spelled out
        # as ReduceMean/Pow/Sqrt, 6625-class CTC head; height 48 only) and the DB text detector
        from models.fetch_pypi import ppocr_path

        shape = [1, 3, 48, 320] if name == "ppocr_rec" else [1, 3, 480, 480]
        return onnx.load(str(ppocr_path(name[len("ppocr_"):]))), {"x": shape}
    if name == "vit":  # session 10's synthetic ViT (unfused attention as torch exports it)
        from models.vit import vit

        return vit(image=224, patch=16, dim=192, heads=3, depth=4), {"input": [1, 3, 224, 224]}
    raise SystemExit(f"unknown model {name!r} (known: {', '.join(MODELS)})")


def _input_shapes(proto, wanted: dict) -> dict[str, list[int]]:
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = wanted.get(vi.name, dims)
    return out


def given_pair(orig: Path, pruned: Path, overrides: dict[str, list[int]]) -> dict:
    """Paths, input shapes and MACs of a user's (original, pruned) pair."""
    import onnx

    import prunec
    from prunec.macs import graph_macs

    for f in (orig, pruned):
        if not f.is_file():
            raise SystemExit(f"bench_speedup: no such file: {f}")
    shapes = _input_shapes(onnx.load(str(orig), load_external_data=False), overrides)
    macs = [graph_macs(m.graph, m.shapes) for m in (prunec.load(str(f), shapes) for f in (orig, pruned))]
    return {"name": orig.stem, "original": str(orig), "pruned": str(pruned), "shapes": shapes,
            "macs_before": macs[0], "macs_after": macs[1]}


def openvino_sampler(onnx_path: Path, inputs: dict, threads: int, min_repeat_ms: int = 200):
    """(sample(n) -> n latencies in seconds, outputs) of OpenVINO's CPU plugin in f32 with
    `threads` inference threads, sampled like prunec.backend.measure's samplers; None when
    openvino is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    import numpy as np

    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    res = req.infer(inputs)
    outs = [np.array(res[o]) for o in compiled.outputs]
    for _ in range(2):
        req.infer(inputs)

    from prunec.backend.measure import repeat_sampler

    return repeat_sampler(lambda: req.infer(inputs), min_repeat_ms), outs


def time_row(info: dict, result: dict, threads: int, repeat: int, rounds: int) -> tuple[dict, dict]:
    """ONNX Runtime, OpenVINO (when installed) and the compiled TVM libraries of `result`
    (backend.run's), original and pruned, timed in interleaved rounds. Returns ({key: latency
    stats}, {"ov_o"/"ov_p": output check against ONNX Runtime})."""
    import onnx

    from prunec.backend import frontend
    from prunec.backend import measure as M

    M.set_tvm_threads(threads)
    samplers, checks = {}, {}
    for tag, name in (("o", "original"), ("p", "pruned")):
        path = Path(info[name])
        sig = frontend.onnx_signature(onnx.load(str(path), load_external_data=False), info["shapes"])
        inputs = M.make_inputs(sig)
        samplers["ort_" + tag], ref = M.ort_sampler(path, inputs, threads)
        ov = openvino_sampler(path, inputs, threads)
        if ov is not None:
            samplers["ov_" + tag], outs = ov
            checks["ov_" + tag] = M.compare(outs, ref)
        samplers["tvm_" + tag], _ = M.tvm_sampler(Path(result["models"][name]["artifact"]), sig,
                                                   inputs)
    return M.timed_rounds(samplers, repeat, rounds), checks


def make_pair(name: str, ratio: float, workdir: Path, log=print) -> dict:
    """Writes workdir/<name>.onnx and workdir/<name>.r<ratio>.onnx (cached); returns paths,
    input shapes and MACs of both."""
    import onnx

    import prunec
    from prunec.pipeline import PruneOptions, prune_model

    workdir.mkdir(parents=True, exist_ok=True)
    orig = workdir / f"{name}.onnx"
    pruned = workdir / f"{name}.r{ratio:g}.onnx"
    meta = workdir / f"{name}.r{ratio:g}.json"
    if orig.exists() and pruned.exists() and meta.exists():
        return json.loads(meta.read_text())
    t0 = time.time()
    proto, wanted = _original(name)
    shapes = _input_shapes(proto, wanted)
    onnx.save(proto, str(orig))
    model = prunec.from_proto(proto, input_shapes=shapes)
    pm, report, _ = prune_model(model, PruneOptions(ratio=ratio, target="x86",
                                                    input_shapes=shapes))
    prunec.save(pm, str(pruned))
    info = {"name": name, "original": str(orig), "pruned": str(pruned), "shapes": shapes,
            "macs_before": report["macs"]["before"], "macs_after": report["macs"]["after"],
            "params_before": report["params"]["before"], "params_after": report["params"]["after"]}
    meta.write_text(json.dumps(info, indent=1))
    log(f"[{name}] built and pruned in {time.time() - t0:.0f} s: MACs "
        f"{info['macs_before'] / 1e6:.0f}M -> {info['macs_after'] / 1e6:.0f}M")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenetv2,yolov8n,ddddocr",
                   help=f"comma-separated, of: {', '.join(MODELS)}")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--budget", type=int, default=0,
                   help="also measure after tuning with this many trials per pair")
    p.add_argument("--threads", type=int)
    p.add_argument("--repeat", type=int, default=3, help="samples per round")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 8)")
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "bench_speedup")
    p.add_argument("--tuning-db", help="default: WORKDIR/tuning-db (persistent)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--pair", nargs=2, action="append", type=Path, default=[],
                   metavar=("ORIGINAL", "PRUNED"), help="measure this pair instead (repeatable)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,..",
                   help="input shape for --pair models with dynamic dims")
    p.add_argument("--keep-libs", type=Path, metavar="DIR",
                   help="also keep the compiled libraries (0 trials) in DIR for --compare-libs")
    p.add_argument("--compare-libs", type=Path, nargs="+", metavar="DIR",
                   help="time the libraries --keep-libs kept in these DIRs in alternation, in "
                        "one process (--threads, default 1; --rounds, default 15); no compile")
    p.add_argument("--runtimes", default="",
                   help="with --compare-libs: also time these runtimes (onnxruntime,openvino) "
                        "on the ONNX files the first DIR's libraries were compiled from, in "
                        "the same alternation")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.compare_libs:
        runtimes = [r for r in a.runtimes.split(",") if r]
        bad = [r for r in runtimes if r not in ("onnxruntime", "openvino")]
        if bad:
            p.error(f"--runtimes: unknown {bad[0]!r} (onnxruntime, openvino)")
        return compare_libs(a.compare_libs, a.threads or 1, a.rounds or 15, runtimes)
    a.rounds = a.rounds or 8
    overrides = {}
    for item in a.shape:
        name, _, dims = item.partition("=")
        try:
            overrides[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            p.error(f"--shape wants NAME=D0,D1,.. got {item!r}")
    log = print if a.verbose else (lambda m: None)
    db = a.tuning_db or str(a.workdir / "tuning-db")
    budgets = [0] + ([a.budget] if a.budget > 0 else [])

    ap = argparse.ArgumentParser()
    ap.add_argument("--target")
    backend.add_arguments(ap)
    print(f"load average at start: {load_average()}; cores usable: {len(os.sched_getaffinity(0))}; "
          f"TVM_BIND_THREADS={os.environ.get('TVM_BIND_THREADS')} (0: TVM workers not pinned, "
          f"as ONNX Runtime's)", flush=True)
    rows = []
    pairs = ([given_pair(o, q, overrides) for o, q in a.pair] if a.pair
             else [make_pair(name, a.ratio, a.workdir) for name in a.models.split(",")])
    for info in pairs:
        name = info["name"]
        for budget in budgets:
            with tempfile.TemporaryDirectory() as out:
                # 0 trials means no tuning records either: the persistent database would apply
                # what an earlier --budget run tuned to every workload it recognizes
                # backend.run compiles, exports and checks the outputs (one short timing);
                # the row's figures come from time_row, with OpenVINO in the same rounds
                argv2 = ["--target", "x86", "--tune-trials", str(budget), "--tuning-db",
                         db if budget else str(Path(out) / "empty-db"),
                         "--repeat", "1", "--rounds", "1"] + (["--threads", str(a.threads)]
                                                              if a.threads else [])
                args = ap.parse_args(argv2)
                r = backend.run(backend.BackendOptions.from_args(args), Path(info["original"]), Path(info["pruned"]),
                                info["shapes"], Path(out), log)
                lat, ov_checks = time_row(info, r, r["compiler"]["threads"], a.repeat, a.rounds)
                if a.keep_libs and budget == 0:
                    keep_libs(a.keep_libs, info, r)
            mo, mp = r["models"]["original"], r["models"]["pruned"]
            macs_ratio = info["macs_before"] / info["macs_after"]
            med = {k: v["median"] for k, v in lat.items()}
            speedup = med["tvm_o"] / med["tvm_p"]
            checks = [mo["output_check"], mp["output_check"], *ov_checks.values()]
            row = {
                "model": name, "trials": budget, "macs_ratio": round(macs_ratio, 3),
                "tune_s": r["tuning"]["time_s"],
                "measured_trials": sum(r["tuning"]["measured_trials"].values()),
                **med, "ov_o": med.get("ov_o"), "ov_p": med.get("ov_p"),
                "speedup": round(speedup, 3),
                "efficiency": round(speedup / macs_ratio, 3),
                "pruned_vs_ort": round(med["ort_o"] / med["tvm_p"], 3),
                "tvm_vs_ov": round(med["ov_o"] / med["tvm_o"], 3) if "ov_o" in med else None,
                "ok": all(c["ok"] for c in checks),
                "max_rel": max(c.get("max_rel", 0) for c in checks),
                "threads": r["compiler"]["threads"],
                "compile_s": [mo["compile_s"], mp["compile_s"]],
                "compile_cpu_s": [mo.get("compile_cpu_s"), mp.get("compile_cpu_s")],
                "compile_phases": [mo.get("compile_phases"), mp.get("compile_phases")],
                "kernels": [mo.get("kernels"), mp.get("kernels")],
                "round_medians": {k: v.get("round_medians") for k, v in lat.items()}}
            # each runtime's original / pruned in the same round, then the median over rounds:
            # what a row whose rounds fell in different host phases still says (alternate.py)
            row["paired_speedup"] = {
                rt: round(paired_ratio(row["round_medians"][f"{rt}_o"],
                                       row["round_medians"][f"{rt}_p"]), 3)
                for rt in ("tvm", "ort", "ov") if row["round_medians"].get(f"{rt}_o")}
            row["paired_efficiency"] = round(row["paired_speedup"]["tvm"] / macs_ratio, 3)
            rows.append(row)
            print_row(row, header=len(rows) == 1)
            print("      compile (s): " + "  |  ".join(
                f"{tag} " + ", ".join(f"{k} {v:.1f}" for k, v in (ph or {}).items())
                + (f" ({kn['compiled']} kernels compiled, {kn['cached']} cached)" if kn else "")
                + (f"; CPU {cpu:.1f} s" if cpu is not None else "")
                for tag, ph, kn, cpu in zip(("orig", "pruned"), row["compile_phases"],
                                            row["kernels"], row["compile_cpu_s"])))
            print("      rounds (ms): " + "  ".join(
                f"{k} {'/'.join(f'{x:.2f}' for x in v or [])}"
                for k, v in row["round_medians"].items()), flush=True)
            print("      paired rounds (original / pruned in the same round, median): " + ", ".join(
                f"{rt.upper()} {sp:.2f}x" for rt, sp in row["paired_speedup"].items())
                + f"; TVM efficiency {row['paired_efficiency']:.2f}", flush=True)
    print(f"(ms: median of the best of {a.rounds} interleaved rounds of {a.repeat} samples of "
          f">=200 ms; threads={rows[0]['threads']}; "
          f"{'given pairs' if a.pair else f'ratio {a.ratio}'}; tuning db {db}; load average at end: {load_average()})")
    print("efficiency = TVM speedup / MACs ratio (goal >= 0.9 on CNNs); "
          "pruned/ORT = ORT original ms / TVM pruned ms (goal > 1); "
          "TVM/OV = OpenVINO original ms / TVM original ms (goal >= 0.9); "
          "match: TVM and OpenVINO outputs vs ONNX Runtime's")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


def keep_libs(dest: Path, info: dict, result: dict) -> None:
    """Copies the pair's compiled libraries (and the .json beside each) into dest and lists
    them, with their MACs, in dest/libs.json (a model measured again replaces its entry)."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    entry = {"model": info["name"], "shapes": info["shapes"]}
    for tag, macs in (("original", info["macs_before"]), ("pruned", info["macs_after"])):
        lib = Path(result["models"][tag]["artifact"])
        name = f"{info['name']}.{tag}{lib.suffix}"
        shutil.copyfile(lib, dest / name)
        shutil.copyfile(lib.with_suffix(".json"), (dest / name).with_suffix(".json"))
        entry[tag] = {"lib": name, "macs": macs, "onnx": str(Path(info[tag]).resolve())}
    index = dest / "libs.json"
    entries = json.loads(index.read_text()) if index.is_file() else []
    entries = [e for e in entries if e["model"] != info["name"]] + [entry]
    index.write_text(json.dumps(entries, indent=1))


def compare_libs(dirs: list[Path], threads: int, rounds: int, runtimes=()) -> int:
    """--compare-libs: every kept library of `dirs` timed in alternation (alternate.py), and
    `runtimes` on the first dir's ONNX files in the same rounds (their rows' dir is the
    runtime's name, compared against the first dir's library)."""
    from alternate import (alternate, calling_thread_share, check_thread_clock, clock_for,
                           kept_libraries, runtime_call, summarize, tvm_call)

    from prunec.backend import measure as M

    libs = kept_libraries(dirs)
    for rt in runtimes:
        for e in [e for e in libs if e["dir"] == str(dirs[0])]:
            if not e.get("onnx"):
                raise SystemExit(f"bench_speedup: {dirs[0]}/libs.json names no ONNX files "
                                 f"(kept by an older bench_speedup); keep the libraries again")
            libs.append({**e, "dir": rt, "runtime": rt})
    print(f"load average at start: {load_average()}; threads={threads} "
          f"({'thread CPU time' if threads == 1 else 'wall time'}); {rounds} rounds", flush=True)
    runs, outs = {}, {}
    for e in libs:
        key = (e["dir"], e["model"], e["tag"])
        if e.get("runtime"):
            runs[key], outs[key] = runtime_call(e["runtime"], e["onnx"], e["io"], threads,
                                                e.get("shapes"))
            share = calling_thread_share(runs[key]) if threads == 1 else 1.0
            if share < 0.9:
                print(f"warning: {e['runtime']} ran {1 - share:.0%} of its CPU time outside the "
                      f"calling thread: its thread CPU time is too low")
        else:
            runs[key], outs[key] = tvm_call(e["lib"], e["io"], threads)
    ratio = check_thread_clock(next(iter(runs.values())), threads)
    if ratio is not None and ratio < 0.7:
        print(f"warning: thread CPU time is {ratio:.2f} of wall time at 1 thread (a busy host, "
              f"or work on other threads, which thread CPU time misses)")
    M.set_tvm_threads(threads)
    per_round = alternate(runs, rounds, 0.1, clock_for(threads))
    stats = summarize(per_round)
    first = dirs[0]
    print(f"{'dir':<28} {'model':<14} {'tag':<8} {'fastest ms':>10} {'median ms':>10} "
          f"{'vs first':>15} {'outputs':>8}")
    for e in libs:
        key = (e["dir"], e["model"], e["tag"])
        ref = (str(first), e["model"], e["tag"])
        vs, same = "", ""
        if key != ref and ref in stats:
            vs = (f"{stats[key]['fastest'] / stats[ref]['fastest']:.3f}/"
                  f"{stats[key]['median'] / stats[ref]['median']:.3f}")
            same = "match" if M.compare(outs[key], outs[ref])["ok"] else "DIFFER"
        print(f"{Path(e['dir']).name[-28:]:<28} {e['model'][:14]:<14} {e['tag']:<8} "
              f"{stats[key]['fastest']:>10.3f} {stats[key]['median']:>10.3f} {vs:>15} {same:>8}")
    for d in list(dirs) + [Path(rt) for rt in runtimes]:
        for e in libs:
            if e["dir"] != str(d) or e["tag"] != "original":
                continue
            o, p = stats[(str(d), e["model"], "original")], stats[(str(d), e["model"], "pruned")]
            macs = e["macs"] / next(x["macs"] for x in libs if x["dir"] == str(d)
                                    and x["model"] == e["model"] and x["tag"] == "pruned")
            sp = [o[k] / p[k] for k in ("fastest", "median")]
            sp.append(paired_ratio(per_round[(str(d), e["model"], "original")],
                                   per_round[(str(d), e["model"], "pruned")]))
            print(f"{Path(d).name[-28:]:<28} {e['model'][:14]:<14} speedup "
                  f"{sp[0]:.2f}x/{sp[1]:.2f}x/{sp[2]:.2f}x  efficiency "
                  f"{sp[0] / macs:.2f}/{sp[1] / macs:.2f}/{sp[2] / macs:.2f} "
                  f"(fastest/median/paired rounds; MACs {macs:.2f}x)")
    print(f"(ms per call; 'vs first': this library / the same one in {first.name}, fastest/median "
          f"round; load average at end: {load_average()})")
    return 0


def load_average() -> str:
    """The host's 1, 5 and 15 minute load averages ("?" where /proc has none)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def print_row(r, header=False):
    ms = lambda v: f"{v:>8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
    if header:
        print(f"{'model':<12} {'trials':>6} {'tune s':>6} {'MACs x':>6} {'ORT orig':>8} "
              f"{'ORT prun':>8} {'OV orig':>8} {'OV prun':>8} {'TVM orig':>8} {'TVM prun':>8} "
              f"{'TVM spd':>7} {'effic':>5} {'prun/ORT':>8} {'TVM/OV':>6} {'compile s':>11} "
              f"{'match':>5}")
    tvm_ov = f"{r['tvm_vs_ov']:>5.2f}x" if r["tvm_vs_ov"] is not None else f"{'-':>6}"
    print(f"{r['model']:<12} {r['trials']:>6} {r['tune_s']:>6.0f} {r['macs_ratio']:>5.2f}x "
          f"{ms(r['ort_o'])} {ms(r['ort_p'])} {ms(r['ov_o'])} {ms(r['ov_p'])} "
          f"{ms(r['tvm_o'])} {ms(r['tvm_p'])} "
          f"{r['speedup']:>6.2f}x {r['efficiency']:>5.2f} {r['pruned_vs_ort']:>7.2f}x {tvm_ov} "
          f"{r['compile_s'][0]:>5.1f}/{r['compile_s'][1]:<5.1f} "
          f"{'yes' if r['ok'] else 'NO':>5}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
