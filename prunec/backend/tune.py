"""Meta-schedule tuning against a persistent JSON database shared by all models and runs.

A task (fused PrimFunc) is keyed by its structural hash; a sidecar file records how many
trials each key has already received, so a workload that was tuned before (in an earlier run,
or earlier in this run by the other model) costs no new trials.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

BUDGET_FILE = "prunec_trials.json"
TRIALS_PER_ITER = 16  # small batches: on 2 cores a batch of 64 takes minutes


def _fmt_s(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


def count_records(db_dir: str) -> int:
    p = Path(db_dir, "database_tuning_record.json")
    if not p.exists():
        return 0
    with open(p) as f:
        return sum(1 for line in f if line.strip())


def tune(mod, target, db_dir: str, trials: int, log: Callable[[str], None], label: str,
         builder="local", runner="local") -> dict:
    """Tunes the fused PrimFuncs of `mod` with at most `trials` measurements in total.
    Returns {"trials": measured, "tasks": n, "skipped_tasks": already tuned, "time_s": ...}."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule import relax_integration as ri

    t0 = time.time()
    Path(db_dir).mkdir(parents=True, exist_ok=True)
    spent_path = Path(db_dir, BUDGET_FILE)
    spent = json.loads(spent_path.read_text()) if spent_path.exists() else {}

    extracted = ri.extract_tasks(mod, target)
    # weight = FLOP-ish size x occurrences would be better; the gradient scheduler refines it.
    per_task = max(TRIALS_PER_ITER, math.ceil(trials / max(1, len(extracted))))
    todo, keys = [], []
    for t in extracted:
        key = f"{tvm.ir.structural_hash(t.dispatched[0]):x}"
        if spent.get(key, 0) >= per_task:
            continue
        todo.append(t)
        keys.append(key)
    skipped = len(extracted) - len(todo)
    if not todo:
        log(f"[tune {label}] all {len(extracted)} tasks already tuned in {db_dir}: no new trials")
        return {"trials": 0, "tasks": len(extracted), "skipped_tasks": skipped,
                "time_s": round(time.time() - t0, 1)}
    budget = min(trials, per_task * len(todo))
    log(f"[tune {label}] {len(todo)} tasks to tune ({skipped} already tuned), "
        f"{budget} trials (<= {per_task} per task)")

    ctxs, weights = ri.extracted_tasks_to_tune_contexts(todo, work_dir=db_dir, seed=0)
    progress = _progress_callback(ms, [t.task_name for t in todo], per_task, budget, log, label)
    database = ms.database.JSONDatabase(work_dir=db_dir)
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
    spent_path.write_text(json.dumps(spent, indent=0, sort_keys=True))
    return {"trials": sum(progress.trials_per_task), "tasks": len(extracted),
            "skipped_tasks": skipped, "time_s": round(time.time() - t0, 1)}


def _progress_callback(ms, names, per_task, budget, log, label):
    @ms.utils.derived_object
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
