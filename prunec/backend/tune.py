"""Meta-schedule tuning against a persistent JSON database shared by all models and runs.

A task (fused PrimFunc) is keyed by its structural hash; a sidecar file records how many
trials each key has already received, so a workload that was tuned before (in an earlier run,
or earlier in this run by the other model) costs no new trials.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

_log = logging.getLogger(__name__)
BUDGET_FILE = "prunec_trials.json"
RECORDS_FILE = "database_tuning_record.json"
# hand-schedule records carry this root-block annotation (value: schedule_version())
HAND_TAG = "prunec_hand_schedule"
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


@functools.lru_cache(maxsize=1)
def schedule_version() -> str:
    """A digest of the code that makes prunec's hand schedules (and the graphs they see): every
    module of the cpu package."""
    import hashlib

    h = hashlib.sha256()
    cpu = Path(__file__).with_name("cpu")
    for path in sorted(cpu.rglob("*.py")):
        h.update(path.relative_to(cpu).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def hand_schedule(mod, target):
    """prunec's hand schedule of a one-function module as a traced Schedule, tagged with
    schedule_version() so that its tuning record can be recognized when the code changes."""
    from .cpu import schedule_task

    sch = schedule_task(mod, target)
    sch.annotate(sch.get_sblock("root"), HAND_TAG, schedule_version())
    return sch


def purge_stale_hand_records(db_dir: str) -> int:
    """Drop the database's hand-schedule records made by other versions of the hand schedules.

    They were measured as "the zero-trial default" of their day: replayed after the schedules
    changed, they would stand in for today's default (slower, if the code got faster), and their
    time would rank against tuned records as if they were. Tuned records stay. Returns how many
    records were dropped."""
    import os

    p = Path(db_dir, RECORDS_FILE)
    if not p.exists():
        return 0
    tag, current = f'"{HAND_TAG}"', schedule_version()  # the value is JSON in JSON: escaped
    lines = p.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if tag not in ln or current in ln]
    if len(keep) == len(lines):
        return 0
    tmp = p.with_suffix(".tmp")
    try:
        tmp.write_text("".join(keep))
        os.replace(tmp, p)  # never a half-written database
    except OSError as e:  # a read-only shared database: use it as it is
        _log.warning("could not drop %d outdated default-schedule record(s) from %s (%s)",
                     len(lines) - len(keep), p, e.strerror or e)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return 0
    return len(lines) - len(keep)


def _hand_record_missing(mod, target, database) -> bool:
    """Whether the database lacks a current-version hand-schedule record for this task."""
    try:
        recs = database.get_top_k(database.commit_workload(mod), 1 << 20)
    except Exception:  # noqa: BLE001
        return True
    version = schedule_version()
    for r in recs:
        if version in str(r.trace.as_json(remove_postproc=True)):
            return False
    return True


def count_records(db_dir: str) -> int:
    p = Path(db_dir, RECORDS_FILE)
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
    stale = purge_stale_hand_records(db_dir)
    if stale:
        log(f"[tune {label}] dropped {stale} hand-schedule record(s) of an older prunec: "
            f"the current default schedules are measured again")
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
    selected, acc, unsearchable = [], 0.0, []
    for key, t in ranked:
        if len(selected) >= max_tasks or acc >= COVER * total:
            break
        if not _searchable(ms, ri, t, db_dir):
            unsearchable.append(t.task_name)
            continue
        selected.append((key, t))
        acc += _cost(t)
    if unsearchable:
        log(f"[tune {label}] {len(unsearchable)} task(s) keep their hand schedule (no "
            f"meta-schedule search space): {', '.join(unsearchable)}")
    per_task = max(TRIALS_PER_ITER, math.ceil(trials / max(1, len(selected))))
    import hashlib

    # the same tasks with the same budget: "already tuned", whatever the search spent
    run_key = "run-" + hashlib.sha256((",".join(sorted(k for k, _ in selected))
                                       + f"|{trials}").encode()).hexdigest()[:16]
    todo = [(k, t) for k, t in selected if spent.get(k, 0) < per_task]
    skipped = len(extracted) - len(todo)
    if run_key in spent or not todo:
        if selected:
            log(f"[tune {label}] the {len(selected)} heaviest of {len(extracted)} tasks are "
                f"already tuned in {db_dir}: no new trials")
            if seed_hand_schedules and runner == "local":
                _reseed(ms, [t.dispatched[0] for _, t in selected], target, db_dir, builder, log,
                        label)
        else:
            log(f"[tune {label}] no task meta-schedule can search: no trials")
        return {"trials": 0, "tasks": len(extracted), "tuned_tasks": len(selected),
                "skipped_tasks": skipped, "time_s": round(time.time() - t0, 1)}
    keys = [k for k, _ in todo]
    todo = [t for _, t in todo]
    budget = min(trials, per_task * len(todo))
    log(f"[tune {label}] tuning the {len(todo)} heaviest of {len(extracted)} tasks "
        f"({100 * acc / total:.0f}% of the estimated FLOPs), {budget} trials "
        f"(<= {per_task} per task, batches of {TRIALS_PER_ITER})")

    database = ms.database.JSONDatabase(work_dir=db_dir)
    verify_here = runner == "local"  # candidates run on this machine: the winners can be re-checked
    builder, runner = _local_infra(ms, target, builder, runner)
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
    verdict = {}
    if verify_here and seed_hand_schedules:
        verdict = verify_winners(ms, [t.dispatched[0] for t in todo], target, database)
        log(f"[tune {label}] re-measured tuned vs default schedules side by side: "
            f"{verdict['tuned']} tuned kept, {verdict['default']} default kept"
            + (f" ({verdict['default']} tuned records lost the re-check)" if verdict["default"] else ""))
    for key, n in zip(keys, progress.trials_per_task):
        spent[key] = spent.get(key, 0) + n
    spent[run_key] = sum(progress.trials_per_task)
    spent_path.write_text(json.dumps(spent, indent=0, sort_keys=True))
    return {"trials": sum(progress.trials_per_task), "tasks": len(extracted),
            "tuned_tasks": len(selected), "skipped_tasks": skipped, "time_s": round(time.time() - t0, 1),
            "verified": verdict}


def _local_infra(ms, target, builder, runner):
    """(builder, runner) for tuning: "local" becomes this machine's, set up for a small,
    busy machine; anything else is passed through (a runner named by string is created)."""
    ncores = int(target.attrs.get("num-cores", 1) or 1)
    if builder == "local":  # the 30 s default times out on a busy 2-core machine
        builder = ms.builder.LocalBuilder(max_workers=max(1, ncores), timeout_sec=180)
    if runner == "local":
        # a few runs per candidate: enough to rank them, without 100 ms minimums per candidate
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=10, enable_cpu_cache_flush=False))
    runner = ms.runner.Runner.create(runner) if isinstance(runner, str) else runner
    return builder, runner


def _reseed(ms, task_mods, target, db_dir, builder, log, label) -> None:
    """Tasks tuned before whose hand-schedule record is gone (an older prunec's, purged): measure
    today's default, commit it, and re-check it against the tuned record, as a tuning run
    would. No trials."""
    database = ms.database.JSONDatabase(work_dir=db_dir)
    missing = [m for m in task_mods if _hand_record_missing(m, target, database)]
    if not missing:
        return
    builder, runner = _local_infra(ms, target, builder, "local")
    n = _seed(ms, missing, target, database, builder, runner)
    verdict = verify_winners(ms, missing, target, database)
    log(f"[tune {label}] measured today's default schedule of {n} tuned task(s) again: "
        f"{verdict['tuned']} tuned kept, {verdict['default']} default kept")


def _searchable(ms, ri, task, db_dir) -> bool:
    """Whether meta-schedule's generic rules can build a search space for the task. Ours are not
    always (the Winograd stages: "TensorRegion pattern match failed"), and one such task would
    abort tune_tasks for all of them."""
    try:
        ctx = ri.extracted_tasks_to_tune_contexts([task], work_dir=db_dir, seed=0)[0][0]
        return len(ctx.generate_design_space()) > 0
    except Exception:  # noqa: BLE001 - TVM raises plain errors from its schedule rules
        return False


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
    cands = []
    for mod in task_mods:
        try:
            sch = hand_schedule(mod, target)
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


VERIFY_MARGIN = 0.97  # a tuned schedule must be at least 3% faster than the default to be used


def verify_winners(ms, task_mods, target, database, rounds: int = 3) -> dict:
    """Re-measure each task's best tuning record against prunec's default schedule, alternating
    the two, and keep the tuned one only if it is clearly faster.

    Each candidate was timed once, minutes apart from the baseline, on a machine whose load moves:
    a slow schedule timed in a quiet moment wins the database (ResNet-18: a 3x3 conv record at
    2.97 ms beat its 1.39 ms default). When the default wins the re-check it is committed again
    with a ranking time just under the tuned record's, so the database applies it from then on
    (record times only rank schedules; reported latencies are always measured afresh)."""
    import numpy as np
    import tvm
    from tvm_ffi import structural_equal  # tvm.ir.structural_equal moved here in 0.27

    out = {"tuned": 0, "default": 0}
    for mod in task_mods:
        rec = database.query_tuning_record(mod, target, "main")
        if rec is None:
            continue
        try:
            hand = hand_schedule(mod, target)
            tuned = database.query_schedule(mod, target, "main")
            if structural_equal(tuned.mod, hand.mod):
                continue  # the default already leads
            libs = [tvm.compile(sch.mod, target=target) for sch in (hand, tuned)]
        except Exception as e:  # noqa: BLE001 - keep the database as it is
            _log.debug("verify: %s", str(e).splitlines()[-1] if str(e) else e)
            continue
        rng = np.random.default_rng(0)
        args = [tvm.runtime.tensor(rng.random([int(d) for d in a.shape]).astype(a.dtype))
                for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
        first = libs[0].mod.time_evaluator("main", tvm.cpu(), number=1, repeat=1)(*args).mean
        number = max(1, int(0.01 / max(first, 1e-6)))  # ~10 ms per sample
        best = [np.inf, np.inf]
        for _ in range(rounds):
            for i, lib in enumerate(libs):
                res = lib.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=3)(*args)
                best[i] = min(best[i], min(res.results))
        if best[1] <= VERIFY_MARGIN * best[0]:
            out["tuned"] += 1
            continue
        out["default"] += 1
        rank = min(float(x) for x in rec.run_secs) * 0.99
        database.commit_tuning_record(ms.database.TuningRecord(
            hand.trace, database.commit_workload(mod), [rank], target,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    return out
