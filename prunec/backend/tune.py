"""Meta-schedule tuning against a persistent JSON database shared by all models and runs.

A task (fused PrimFunc) is keyed by its structural hash; a sidecar file records how many
trials each key has already received, so a workload that was tuned before (in an earlier run,
or earlier in this run by the other model) costs no new trials.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

_log = logging.getLogger(__name__)
BUDGET_FILE = "prunec_trials.json"
TRIALS_PER_ITER = 8  # small batches: on 2 cores a batch of 64 takes minutes
SEARCH_POPULATION = 64
COVER = 0.8  # tune the heaviest tasks that make up this share of the estimated FLOPs


def _cost(task) -> float:
    """Estimated FLOPs of one task x how often the model calls it."""
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        return float(estimate_tir_flops(task.dispatched[0])) * float(task.weight)
    except Exception:
        return float(task.weight)


def _fmt_s(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


def count_records(db_dir: str) -> int:
    p = Path(db_dir, "database_tuning_record.json")
    if not p.exists():
        return 0
    with open(p) as f:
        return sum(1 for line in f if line.strip())


def tune(mod, target, db_dir: str, trials: int, log: Callable[[str], None], label: str,
         builder="local", runner="local", seed_hand_schedules: bool = True) -> dict:
    """Tunes the fused PrimFuncs of `mod` with at most `trials` measurements in total.
    Returns {"trials": measured, "tasks": n, "skipped_tasks": already tuned, "time_s": ...}."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash  # tvm.ir.structural_hash moved here in 0.27
    from tvm.s_tir.meta_schedule import relax_integration as ri

    t0 = time.time()
    Path(db_dir).mkdir(parents=True, exist_ok=True)
    spent_path = Path(db_dir, BUDGET_FILE)
    spent = json.loads(spent_path.read_text()) if spent_path.exists() else {}

    extracted = ri.extract_tasks(mod, target)
    keyed = {}
    for t in extracted:
        keyed.setdefault(f"{structural_hash(t.dispatched[0]) & (2**64 - 1):016x}", t)
    # Only the heaviest tasks are worth trials on a small budget: rank by estimated FLOPs x
    # occurrences, keep those that make up COVER of the total, at most one batch's worth each.
    ranked = sorted(keyed.items(), key=lambda kv: (-_cost(kv[1]), kv[0]))
    total = sum(_cost(t) for _, t in ranked) or 1.0
    max_tasks = max(1, trials // TRIALS_PER_ITER)
    selected, acc = [], 0.0
    for key, t in ranked:
        if len(selected) >= max_tasks or acc >= COVER * total:
            break
        selected.append((key, t))
        acc += _cost(t)
    per_task = max(TRIALS_PER_ITER, math.ceil(trials / max(1, len(selected))))
    import hashlib

    # the same tasks with the same budget: "already tuned", whatever the search spent
    run_key = "run-" + hashlib.sha256((",".join(sorted(k for k, _ in selected))
                                       + f"|{trials}").encode()).hexdigest()[:16]
    todo = [(k, t) for k, t in selected if spent.get(k, 0) < per_task]
    skipped = len(extracted) - len(todo)
    if run_key in spent or not todo:
        log(f"[tune {label}] the {len(selected)} heaviest of {len(extracted)} tasks are already "
            f"tuned in {db_dir}: no new trials")
        return {"trials": 0, "tasks": len(extracted), "tuned_tasks": len(selected),
                "skipped_tasks": skipped, "time_s": round(time.time() - t0, 1)}
    keys = [k for k, _ in todo]
    todo = [t for _, t in todo]
    budget = min(trials, per_task * len(todo))
    log(f"[tune {label}] tuning the {len(todo)} heaviest of {len(extracted)} tasks "
        f"({100 * acc / total:.0f}% of the estimated FLOPs), {budget} trials "
        f"(<= {per_task} per task, batches of {TRIALS_PER_ITER})")

    database = ms.database.JSONDatabase(work_dir=db_dir)
    ncores = int(target.attrs.get("num-cores", 1) or 1)
    if builder == "local":  # the 30 s default times out on a busy 2-core machine
        builder = ms.builder.LocalBuilder(max_workers=max(1, ncores), timeout_sec=180)
    if runner == "local":
        # a few runs per candidate: enough to rank them, without 100 ms minimums per candidate
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=10, enable_cpu_cache_flush=False))
    runner = ms.runner.Runner.create(runner) if isinstance(runner, str) else runner
    if seed_hand_schedules:
        n = _seed(ms, [t.dispatched[0] for t in todo], target, database, builder, runner)
        log(f"[tune {label}] measured the fast default schedule of {n} tasks as a baseline")
    # the default search (population 512, 4 genetic rounds) takes minutes per batch on 2 cores
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=SEARCH_POPULATION, init_min_unmeasured=SEARCH_POPULATION // 2,
        genetic_num_iters=2)
    ctxs, weights = ri.extracted_tasks_to_tune_contexts(todo, work_dir=db_dir, seed=0,
                                                        strategy=strategy)
    progress = _progress_callback(ms, [t.task_name for t in todo], per_task, budget, log, label)
    with target:
        ms.tune_tasks(
            tasks=ctxs, task_weights=weights, work_dir=db_dir, max_trials_global=budget,
            max_trials_per_task=per_task, num_trials_per_iter=TRIALS_PER_ITER,
            builder=builder, runner=runner, database=database,
            measure_callbacks=[ms.measure_callback.AddToDatabase(),
                               ms.measure_callback.RemoveBuildArtifact(),
                               ms.measure_callback.UpdateCostModel(), progress],
            task_scheduler="gradient")
    for key, n in zip(keys, progress.trials_per_task):
        spent[key] = spent.get(key, 0) + n
    spent[run_key] = sum(progress.trials_per_task)
    spent_path.write_text(json.dumps(spent, indent=0, sort_keys=True))
    return {"trials": sum(progress.trials_per_task), "tasks": len(extracted),
            "tuned_tasks": len(selected), "skipped_tasks": skipped, "time_s": round(time.time() - t0, 1)}


def _progress_callback(ms, names, per_task, budget, log, label):
    from tvm.ir.utils import derived_object

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def __init__(self):
            super().__init__()
            self.trials_per_task = [0] * len(names)
            self.best = [math.inf] * len(names)
            self.t0 = time.time()

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results):
            self.trials_per_task[task_id] += len(measure_candidates)
            for r in runner_results:
                if r.run_secs:
                    sec = sum(float(s) for s in r.run_secs) / len(r.run_secs)
                    self.best[task_id] = min(self.best[task_id], sec)
            done = sum(n >= per_task for n in self.trials_per_task)
            total = sum(self.trials_per_task)
            el = time.time() - self.t0
            left = el / total * (budget - total) if total else 0.0
            best = self.best[task_id]
            best_s = f"{best * 1e3:.3f} ms" if best < math.inf else "none valid"
            log(f"[tune {label}] {names[task_id][:40]}: {self.trials_per_task[task_id]}/{per_task}"
                f" trials, best {best_s} | tasks done {done}/{len(names)}, trials {total}/{budget},"
                f" {_fmt_s(el)} elapsed, ~{_fmt_s(left)} left")

    return Progress()


def _seed(ms, task_mods, target, database, builder, runner) -> int:
    """Measure prunec's hand schedule of each task with the tuner's own builder and runner and
    commit it as a tuning record: the database then applies whichever is faster, so a small
    budget can never make a task slower than the zero-trial default (and the search starts
    from a known-good point)."""
    from tvm import s_tir

    from .cpu_schedule import schedule_task

    cands = []
    for mod in task_mods:
        sch = s_tir.Schedule(mod)
        try:
            schedule_task(sch, target)
        except Exception as e:
            _log.debug("no hand schedule for a task: %s", str(e).splitlines()[-1])
            continue  # no hand schedule for this one: tuning alone decides
        cands.append((mod, sch))
    if not cands:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in cands])
    n = 0
    for (mod, sch), b in zip(cands, built):
        if b.error_msg:
            _log.debug("hand schedule build failed: %s", b.error_msg[-300:])
            continue
        args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        fut = runner.run([ms.runner.RunnerInput(b.artifact_path, target.kind.name
                                                if target.kind.name != "llvm" else "cpu",
                                                args_info)])[0]
        res = fut.result()
        if res.error_msg or not res.run_secs:
            _log.debug("hand schedule run failed: %s", (res.error_msg or "")[-300:])
            continue
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, database.commit_workload(mod), list(res.run_secs), target, args_info))
        n += 1
    return n
