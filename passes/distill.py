"""Distillation: fine-tune the pruned model so its outputs match the original's, on unlabeled inputs.

No labels and no training code: the original model is the teacher. Its outputs on the calibration
inputs are computed once with ONNX Runtime; the pruned graph runs as a JAX function
(prunec.onnx_jax) whose layer weights are trained with Adam to reproduce them. Samples run one
at a time under `jax.vmap`, so graphs exported with a fixed batch of 1 train in batches too.

The loss is the squared output error, each output channel weighted by the inverse of the teacher's
variance in it (so boxes in pixels and probabilities in [0, 1] count alike), with a floor at a tenth
of the output's mean variance (a class that almost never fires does not dominate with noise).
Training fits on the fit split and stops early on the held-out split: the parameters of the best
held-out check (four an epoch) are kept, and the result is never worse on the held-out split than the input model.

Why JAX, not TVM's training stack: TVM 0.27's Relax ONNX importer has no LSTM/GRU converter and
its gradient registry lacks Resize, Clip, strided slices and normalization (measured and listed in
docs/accuracy.md); JAX is an optional extra (`prunec[distill]`), never a runtime dependency.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from onnx import numpy_helper

from prunec.errors import PrunecError
from prunec.graph import Model
from prunec.recovery.data import CalibData
from prunec.recovery.scoring import output_error, softmax_outputs
from prunec.recovery.stream import Tapper, channel_floor, floored as floor_runs, output_axes, output_axis, output_segments

from .base import PassResult

DEFAULT_BUDGET_S = 600.0
FEATURE_WEIGHT = 1.0  # weight of the inner-tensor term against the output term
MAX_EPOCHS = 200
PATIENCE = 6  # epochs without a better held-out loss before stopping
CHECKS_PER_EPOCH = 4  # held-out checks per epoch
# A check whose held-out loss is this many times the best so far means the steps are too large for
# this model (PP-OCRv4's attention recognizer at lr 1e-3: 0.031 -> 0.060 within a quarter epoch,
# never back; at 3e-4 it fell to 0.028): go back to the best weights, cut the rate by BACKOFF.
DIVERGED = 1.5
BACKOFF = 0.3
MAX_BACKOFFS = 3
# Samples per step. 8 was measured against 16 in session 9 (docs/accuracy.md): better scores at 2x
# on three models, worse at 1.5x on YOLOv8n, held-out losses either way; 16 stays.
BATCH = 16
# The decision term (decision_weight > 0): the mean weighted error over the entries that decide each
# row's winner, added to the mean over all entries. With thousands of classes (a CTC head) almost all
# of the per-entry error is in logits that never come near the top.
# On by default since session 12: ddddocr's recognizer at 2x read 0.709 exact match against 0.688
# without it (12 epochs from one refit) and 0.710 in the whole 600 s pipeline (goal 0.708); PP-OCRv4's
# at 2x kept 0.902 where plain distillation fell to 0.883. Outputs under DECISION_MIN_CLASSES classes
# (YOLO heads, small classifiers) never get it.
DECISION_WEIGHT = 1.0
DECISION_K = 5  # the teacher's top k of each row, and any entry the student lifts to their level
KTH = "#kth"
DECISION_MIN_CLASSES = 64  # outputs with a class axis at least this long get the decision term
# The decision guard (decision_guard=True): for outputs a Softmax computes over DECISION_MIN_CLASSES+
# classes, a held-out check is taken as the best only if the student's winners agree with the
# teacher's, class-balanced, at least as often as when distillation began. A lower loss can hide
# worse decisions: on PP-OCRv4's recognizer (80% of time steps blank) distillation agreed more on
# blank steps and less on characters, dropping characters (exact match 0.902 -> 0.871, session 13).


@dataclass
class DistillResult(PassResult):
    epochs: float = 0.0  # epochs run (steps / steps per epoch)
    best_epoch: float = 0.0  # where the held-out loss was best; 0: nothing beat the model as given, which is returned unchanged
    steps: int = 0
    batch: int = 0
    lr: float = 0.0  # the step size at the end (lower than asked after a backoff)
    backoffs: int = 0  # times the held-out loss diverged and the rate was cut
    compile_s: float = 0.0
    stopped: str = ""
    held_out_loss_before: float = 0.0
    held_out_loss_after: float = 0.0
    fit_samples: int = 0
    check_samples: int = 0
    trained_tensors: int = 0
    frozen_tensors: int = 0  # weights of the unpruned prefix, which still computes the teacher's tensors exactly
    inner_targets: int = 0  # inner tensors matched to the teacher's besides the outputs
    # class-balanced agreement of the winners with the teacher's on the held-out split (decision guard)
    held_out_agreement_before: float | None = None
    held_out_agreement_after: float | None = None
    output_error_before: float | None = None  # prunec's relative output error on the held-out split
    output_error_after: float | None = None

    def report(self) -> dict:
        out = asdict(self)
        out["method"] = "distill"
        return out


class Distill:
    """The pass: `Distill(original, fit, check)(pruned) -> (distilled, DistillResult)`. The result is
    the pruned model itself when training does not lower the held-out output error."""

    name = "distill"

    def __init__(self, original: Model, fit: CalibData, check: CalibData, *, budget_s: float | None = None,
                 epochs: int | None = None, lr: float = 1e-3, batch: int = BATCH, log=lambda s: None,
                 features: list[Feature] | None = None):
        self.original, self.fit, self.check = original, fit, check
        self.kw = dict(budget_s=budget_s, epochs=epochs, lr=lr, batch=batch, log=log, features=features)
        self.log = log

    def __call__(self, model: Model) -> tuple[Model, DistillResult]:
        # the held-out check before and after training is part of the budget: time the first, leave as
        # much for the second (at 416x416 the two took 20 s, a 600 s budget overran by that)
        t = time.perf_counter()
        before = output_error(self.original, model, self.check)
        kw = dict(self.kw)
        if kw["budget_s"] is not None:
            kw["budget_s"] = max(kw["budget_s"] - 2 * (time.perf_counter() - t), 1.0)
        out, result = distill(self.original, model, self.fit, self.check, **kw)
        after = output_error(self.original, out, self.check) if result.best_epoch else before
        result.output_error_before, result.output_error_after = before, after
        if after > before:
            self.log(f"distill: held-out output error rose ({before:.4g} -> {after:.4g}); the model is kept as given")
            result.notes.append("distillation did not lower the held-out output error; not kept")
            return model, result
        return out, result


def _samples(data: CalibData) -> list[dict[str, np.ndarray]]:
    return [{k: v[i:i + 1] for k, v in g.items()} for g, n in zip(data.groups, data.sizes) for i in range(n)]


def _shape_groups(data: CalibData) -> list[CalibData]:
    """The samples of each shape (one group unless the calibration data has several shapes)."""
    return [CalibData(g, data.source) for g in data.groups]


def _batches(sizes: list[int], batch: int, order: np.ndarray | None = None):
    """(group, sample indices) of each batch: batches never mix shape groups. `order`: a permutation
    of all samples (groups concatenated); each group's samples are taken in that order and the
    batches come in the order of their first sample (with one group: order cut in batches)."""
    order = np.arange(sum(sizes)) if order is None else order
    starts = np.cumsum([0] + list(sizes))
    out = []
    for g in range(len(sizes)):
        rank = np.flatnonzero((order >= starts[g]) & (order < starts[g + 1]))
        for i in range(0, len(rank), batch):
            out.append((rank[i], g, np.sort(order[rank[i:i + batch]] - starts[g])))
    return [(g, idx) for _, g, idx in sorted(out, key=lambda b: b[0])]


def teacher_outputs(teacher: Model, data: CalibData, names: list[str]) -> dict[str, np.ndarray]:
    """The teacher's tensors, one sample at a time: [N, *the tensor's shape for one sample]."""
    tap = Tapper(teacher, [n for n in names if n not in [o.name for o in teacher.graph.outputs]])
    runs = [tap.run(s) for s in _samples(data)]
    return {n: np.stack([r[n] for r in runs]).astype(np.float32) for n in names}


def channel_weights(target: np.ndarray, segments: list[int] | None = None, axis: int | None = None) -> np.ndarray:
    """1 / variance per channel of one output (target is [N, *shape], or a list of such arrays of
    several shapes: the channel axis is then one whose length they share), broadcastable to a sample.
    `segments`: runs of the channel axis that come from one tensor (prunec.recovery.stream.
    output_segments); each run is floored as the held-out output error floors it. `axis`: the
    model's channel axis (output_axes: an axis the model leaves open, such as a recognizer's time
    steps, is never it); without it, the shortest axis of the data."""
    targets = target if isinstance(target, list) else [target]
    shape = targets[0].shape[1:]
    varying = {a for a in range(len(shape)) if len({t.shape[a + 1] for t in targets}) > 1}
    if axis is None or not 0 < axis < len(shape) or axis in varying:
        axis = output_axis(tuple(1 if a in varying else d for a, d in enumerate(shape)))
    if axis is None:
        var = np.full((), np.concatenate([t.ravel() for t in targets]).var() or 1.0)
        return (1.0 / var).astype(np.float32)
    moved = np.concatenate([np.moveaxis(t, axis + 1, -1).reshape(-1, shape[axis]) for t in targets])
    var = moved.var(axis=0).astype(np.float64)
    if segments and len(segments) > 1:
        floored = floor_runs(var, segments)
    else:
        # One run: a tenth of the mean variance, as before the held-out measure was per entry (the
        # recognizer's distillation results were measured with it).
        floored = np.maximum(var, 0.1 * var.mean() + 1e-12)
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    return (1.0 / floored).reshape(bshape).astype(np.float32)


def output_weights(teacher: Model, t_fit: list[dict], names: list[str],
                   targets: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """channel_weights of each output's target (`targets`: output -> the tensor matched in its place,
    e.g. softmax_logits; default the output itself), along the model's channel axis: PaddleOCR's
    recognizer outputs [1, 40 time steps, 6625 classes], and the shortest axis of the data (the time
    steps) would weigh steps instead of classes."""
    targets = targets or {}
    axes = output_axes(teacher, names)
    segments = output_segments(teacher, names, axes)
    out = {}
    for o, seg, axis in zip(names, segments, axes):
        z = targets.get(o, o)
        out[z] = channel_weights([t[z] for t in t_fit] if len(t_fit) > 1 else t_fit[0][z], seg, axis)
    return out


def softmax_logits(teacher: Model, student: Model, names: list[str]) -> dict[str, tuple[str, int]]:
    """{output: (its logits, class axis)} for outputs a Softmax computes along their class axis
    (prunec.recovery.scoring) whose logits the teacher has under the same name. The student matches
    the teacher's logits there, centred along that axis (a softmax ignores a shift): matching
    probabilities leaves almost no gradient in the thousands of classes near 0 and in the saturated
    winner, and the logits carry what the teacher knows about the runners-up (PP-OCRv4's recognizer
    ends in Softmax over 6625 characters)."""
    teacher_tensors = {o.name for n in teacher.graph.nodes for o in n.outputs}
    return {o: (z, axis) for o, (z, axis) in softmax_outputs(student, names).items()
            if z in teacher_tensors and student.shapes.get(z) == student.shapes.get(o)}


def _centre(targets: dict, logits: dict[str, tuple[str, int]]) -> None:
    """Subtract each row's mean along the class axis from the stored logits ([N, *shape])."""
    for z, axis in logits.values():
        targets[z] = targets[z] - targets[z].mean(axis=axis + 1, keepdims=True)


def distill(teacher: Model, student: Model, fit: CalibData, check: CalibData, *,
            budget_s: float | None = None, epochs: int | None = None, lr: float = 1e-3,
            batch: int = BATCH, seed: int = 0, log=lambda s: None, progress=None,
            relative_lr: bool = True, features: list[Feature] | None = None,
            feature_weight: float = FEATURE_WEIGHT, freeze_exact: bool = True,
            decision_weight: float = DECISION_WEIGHT, decision_k: int = DECISION_K,
            match_logits: bool = True, decision_guard: bool = True) -> tuple[Model, DistillResult]:
    """Returns the distilled student (a new Model) and what was done. `features`: inner tensors the
    student also learns to reproduce (the teacher's kept channels), besides the outputs.
    `freeze_exact`: leave untrained the layers that still compute exactly the teacher's tensors
    (unpruned_prefix), so no gradient flows through them. `match_logits`: outputs a Softmax computes
    are matched by their logits (softmax_logits). `decision_guard`: see DECISION_MIN_CLASSES."""
    from prunec.onnx_jax import JaxGraph, require_jax

    jax = require_jax()
    jnp = jax.numpy
    t_start = time.perf_counter()
    budget_s = DEFAULT_BUDGET_S if budget_s is None else float(budget_s)
    if len(fit) == 0:
        raise PrunecError("distillation needs calibration samples (--calib)")
    net = JaxGraph(student.to_proto())
    frozen = unpruned_prefix(teacher, net) if freeze_exact else set()
    if not set(net.trainable) - frozen:
        log("distill: every layer still computes the teacher's tensors; nothing to train")
        return student, DistillResult(name="distill", stopped="nothing to train: the model computes the teacher's tensors",
                                      time_s=time.perf_counter() - t_start, fit_samples=len(fit),
                                      check_samples=len(check), frozen_tensors=len(frozen))
    outs = net.outputs
    model_outs = [o for o in outs if o in {v.name for v in teacher.graph.outputs}]
    logits = softmax_logits(teacher, student, model_outs) if match_logits else {}
    if logits:
        log(f"distill: matching the logits of {len(logits)} softmax output(s), centred per row")
    # the tensors matched to the teacher's: the outputs, or the logits before their softmax
    float_outs = [logits[o][0] if o in logits else o for o in model_outs]
    # one entry per shape group of the calibration data (batches never mix shapes)
    t_fit = [teacher_outputs(teacher, g, float_outs) for g in _shape_groups(fit)]
    t_check = [teacher_outputs(teacher, g, float_outs) for g in _shape_groups(check)]
    for targets in t_fit + t_check:
        _centre(targets, logits)
    centred = {z: axis for z, axis in logits.values()}
    weights = {o: jnp.asarray(w) for o, w in
               output_weights(teacher, t_fit, model_outs, {o: z for o, (z, _) in logits.items()}).items()}
    features = [f for f in (features or []) if f.name in net.tensors and f.name not in float_outs]
    feature_loss = _feature_loss(jax, teacher, features, fit) if features and feature_weight > 0 else None
    in_names = net.inputs
    x_fit = [{k: g[k][:, None] for k in in_names} for g in fit.groups]  # [N, 1, ...]: one sample, its batch of one
    x_check = [{k: g[k][:, None] for k in in_names} for g in check.groups]

    # Outputs with a class axis long enough for the decision term: each row's k-th largest teacher
    # value is stored beside the targets (key + KTH), so a step compares instead of sorting.
    decided = {o: int(np.argmax(w.shape)) for o, w in weights.items()
               if w.ndim and max(w.shape) >= DECISION_MIN_CLASSES} if decision_weight > 0 else {}
    for targets in t_fit + t_check:
        for o, axis in decided.items():
            targets[o + KTH] = kth_largest(targets[o], axis + 1, decision_k)

    # the decision guard's outputs (their logits' names) and class axes, and the teacher's held-out winners
    guarded = {z: centred[z] for z in decided if z in centred} if decision_guard else {}
    t_wins = [[np.argmax(t[z], axis=axis + 1) for z, axis in guarded.items()] for t in t_check]

    def output_loss(o, y, ts):
        if o in centred:  # a sample keeps its batch axis of one: the class axis is the output's own
            y = y - jnp.mean(y, axis=centred[o], keepdims=True)
        err = jnp.square(y - ts[o]) * weights[o]
        if o not in decided:
            return jnp.mean(err)
        # the entries that decide each row's winner: the teacher's top k and any the student lifts to their level
        top = (ts[o] >= ts[o + KTH]) | (jax.lax.stop_gradient(y) >= ts[o + KTH])
        return jnp.mean(err) + decision_weight * jnp.sum(jnp.where(top, err, 0.0)) / jnp.maximum(jnp.sum(top), 1)

    def sample_run(params, xs, ts):
        """One sample's loss and its outputs (by name)."""
        ys = dict(zip(float_outs, net.run(params, xs, float_outs)))
        return sum(output_loss(o, y, ts) for o, y in ys.items()) / len(float_outs), ys

    def sample_loss(params, xs, ts):
        return sample_run(params, xs, ts)[0]

    def batch_loss(params, xs, ts):
        return jnp.mean(jax.vmap(sample_loss, in_axes=(None, 0, 0))(params, xs, ts))

    def train_loss(params, xs, ts):
        if feature_loss is None:
            return batch_loss(params, xs, ts)

        def one(x, t):
            ys = net.run(params, x, float_outs + [f.name for f in features])
            out = sum(output_loss(o, y, t) for o, y in zip(float_outs, ys)) / len(float_outs)
            return out + feature_weight * feature_loss(x, ys[len(float_outs):])
        return jnp.mean(jax.vmap(one, in_axes=(0, 0))(xs, ts))

    def batch_eval(params, xs, ts):
        """The batch's mean loss, and each guarded output's winners per sample."""
        def one(x, t):
            loss, ys = sample_run(params, x, t)
            return loss, [jnp.argmax(ys[z], axis=axis) for z, axis in guarded.items()]
        losses, wins = jax.vmap(one, in_axes=(0, 0))(xs, ts)
        return jnp.mean(losses), wins

    grad_fn = jax.jit(jax.value_and_grad(train_loss))
    eval_fn = jax.jit(batch_eval)

    params = {k: jnp.asarray(v) for k, v in net.params().items() if k not in frozen}
    n = len(fit)
    batch = max(1, min(batch, n))
    steps_per_epoch = len(_batches(fit.sizes, batch))

    def evaluate(p) -> tuple[float, float | None]:
        """Held-out loss, and the guarded outputs' class-balanced agreement (None without them)."""
        total, pairs = 0.0, []
        for g, idx in _batches(check.sizes, batch):
            xs = {k: v[idx] for k, v in x_check[g].items()}
            ts = {k: v[idx] for k, v in t_check[g].items()}
            loss, wins = eval_fn(p, xs, ts)
            total += float(loss) * len(idx)
            pairs += [(t[idx], np.asarray(w)) for t, w in zip(t_wins[g], wins)]
        return total / len(check), (balanced_agreement(pairs) if guarded else None)

    t0 = time.perf_counter()
    before, agree0 = evaluate(params)
    compile_s = time.perf_counter() - t0
    best, best_loss, best_step, best_agree = params, before, 0, agree0
    m = {k: jnp.zeros_like(v) for k, v in params.items()}
    v2 = {k: jnp.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    # The held-out split is checked CHECKS_PER_EPOCH times an epoch: on a large model a CPU budget
    # holds only a few epochs, and the best point is often inside one.
    check_every = max(1, math.ceil(steps_per_epoch / CHECKS_PER_EPOCH))
    planned = (epochs if epochs is not None else MAX_EPOCHS) * steps_per_epoch
    patience = PATIENCE * steps_per_epoch
    step, stopped, order, checks, backoffs = 0, "epochs", [], 0, 0
    since = 0  # the step Adam's moments (and the warmup) last started from
    b1, b2, eps = 0.9, 0.999, 1e-8
    # Steps relative to each tensor's size (relative_lr): a pruned and refitted model starts near a
    # good solution, and one absolute rate moves a small-valued tensor (a classifier over thousands
    # of classes) far more, relatively, than a large-valued one. Warmup: Adam's first steps are
    # full-size whatever the gradient.
    scale = {k: (max(float(jnp.sqrt(jnp.mean(jnp.square(v)))), 1e-3) if relative_lr else 1.0)
             for k, v in params.items()}
    warmup = max(1, min(steps_per_epoch, 50)) if relative_lr else 1
    log(f"distill: {len(params)} tensors ({len(frozen)} of the unpruned prefix frozen), {len(features)} inner targets, {n} fit / {len(check)} held-out samples, held-out loss "
        f"{before:.4g}" + (f", decisions agree {agree0:.4f}" if guarded else "") + f", budget {budget_s:.0f} s")
    while step < planned:
        t_chunk = time.perf_counter()
        for _ in range(min(check_every, planned - step)):
            if not order:  # a new epoch: every fit sample once, in batches of one shape group each
                order = _batches(fit.sizes, batch, rng.permutation(n))
            grp, idx = order.pop(0)
            xs = {k: v[idx] for k, v in x_fit[grp].items()}
            ts = {k: v[idx] for k, v in t_fit[grp].items()}
            # cosine decay over the planned steps (planned from the time budget after the first checks)
            rate = lr * 0.5 * (1 + math.cos(math.pi * min(step / max(planned, 1), 1.0)))
            rate *= min(1.0, (step - since + 1) / warmup)
            loss, g = grad_fn(params, xs, ts)
            step += 1
            m = {k: b1 * m[k] + (1 - b1) * g[k] for k in params}
            v2 = {k: b2 * v2[k] + (1 - b2) * g[k] * g[k] for k in params}
            c1, c2 = 1 - b1 ** (step - since), 1 - b2 ** (step - since)
            params = {k: params[k] - rate * scale[k] * (m[k] / c1) / (jnp.sqrt(v2[k] / c2) + eps) for k in params}
        held, agree = evaluate(params)
        checks += 1
        if held < best_loss and (agree is None or agree >= agree0):
            best, best_loss, best_step, best_agree = params, held, step, agree
        elif held > DIVERGED * best_loss and backoffs < MAX_BACKOFFS:
            backoffs += 1
            lr *= BACKOFF
            params, since = best, step
            m = {k: jnp.zeros_like(v) for k, v in params.items()}
            v2 = {k: jnp.zeros_like(v) for k, v in params.items()}
            log(f"distill: held-out loss {held:.4g} against {best_loss:.4g} at best: steps too large; "
                f"back to the best weights at lr {lr:.3g}")
        elapsed = time.perf_counter() - t_start
        chunk_time = time.perf_counter() - t_chunk
        if epochs is None and (checks <= 2 or step <= planned // 2):
            # Plan the steps the budget allows from the pace since the first check (the first chunk
            # also compiled), again at each check of the first half: one slow chunk early on must not
            # leave a tenth of the budget unused (YOLOv8n 2x: 424 s of 465).
            if checks == 1:
                pace, paced_from = chunk_time / check_every, (time.perf_counter(), step)
            else:
                pace = (time.perf_counter() - paced_from[0]) / max(step - paced_from[1], 1)
            fitting = int((budget_s - elapsed) / max(pace, 1e-6)) // check_every * check_every  # whole chunks
            planned = max(step, min(MAX_EPOCHS * steps_per_epoch, step + fitting))
        log(f"distill: epoch {step / steps_per_epoch:.2f}/{planned / steps_per_epoch:.2f} fit loss {float(loss):.4g} "
            f"held-out {held:.4g}" + (f" agree {agree:.4f}" if guarded else "")
            + f" (best {best_loss:.4g} @ {best_step / steps_per_epoch:.2f}) {elapsed:.0f} s")
        if progress is not None:
            progress(step / steps_per_epoch, planned / steps_per_epoch)
        if step - best_step >= patience:
            stopped = f"held-out loss not improved for {PATIENCE} epochs"
            break
        if elapsed + chunk_time > budget_s and epochs is None:
            stopped = "time budget"
            break
    graph = student.graph.copy()
    tensors = graph.tensors()
    for k, v in best.items():
        tensors[k].values = np.asarray(v, dtype=np.float32)
    out = student.with_graph(graph) if best_step else student
    result = DistillResult(name="distill", epochs=round(step / steps_per_epoch, 2),
                           best_epoch=round(best_step / steps_per_epoch, 2), steps=step, batch=batch, lr=lr, backoffs=backoffs,
                           time_s=time.perf_counter() - t_start, compile_s=compile_s, stopped=stopped,
                           held_out_loss_before=before, held_out_loss_after=best_loss,
                           held_out_agreement_before=agree0, held_out_agreement_after=best_agree,
                           fit_samples=n, check_samples=len(check), trained_tensors=len(params), frozen_tensors=len(frozen),
                           inner_targets=len(features) if feature_loss is not None else 0)
    return out, result


def balanced_agreement(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """How often the student's winner is the teacher's, averaged over the teacher's winning classes
    (each class counts alike: a CTC head's blank steps do not outvote its characters).
    pairs: (teacher's winners, student's winners) arrays of one shape."""
    t = np.concatenate([a.ravel() for a, _ in pairs])
    same = np.concatenate([(a == b).ravel() for a, b in pairs])
    _, cls = np.unique(t, return_inverse=True)
    return float(np.mean(np.bincount(cls, weights=same) / np.bincount(cls)))


def kth_largest(t: np.ndarray, axis: int, k: int) -> np.ndarray:
    """The k-th largest value along `axis` (kept, length 1)."""
    k = min(k, t.shape[axis])
    return np.take(np.partition(t, t.shape[axis] - k, axis=axis), [t.shape[axis] - k], axis=axis)


def unpruned_prefix(teacher: Model, net) -> set[str]:
    """The trainable tensors of the student's nodes that compute exactly what the teacher's do: the
    same node (name, op, attributes, inputs, outputs) whose inputs are the model's inputs, constants
    equal to the teacher's, or outputs of such nodes. Typically the stem that the floors keep whole:
    it is the most expensive part of a training step (full resolution) and already the teacher's,
    so it is left as it is and the backward pass stops where pruning begins."""
    tproto = teacher.to_proto()
    tconsts = {i.name: i for i in tproto.graph.initializer}
    tnodes = {n.name: n for n in tproto.graph.node if n.name}
    exact = set(net.inputs)
    same_const: dict[str, bool] = {}

    def const_is_teachers(name: str) -> bool:
        if name not in same_const:
            t = tconsts.get(name)
            same_const[name] = t is not None and np.array_equal(numpy_helper.to_array(t), net.consts[name])
        return same_const[name]

    frozen, used_elsewhere = set(), set()
    for node in net.nodes:
        twin = tnodes.get(node.name)
        same = twin is not None and twin.op_type == node.op_type and list(twin.input) == list(node.input) \
            and list(twin.output) == list(node.output) \
            and [a.SerializeToString() for a in twin.attribute] == [a.SerializeToString() for a in node.attribute] \
            and all(not i or i in exact or (i in net.consts and const_is_teachers(i)) for i in node.input)
        if same:
            exact.update(o for o in node.output if o)
            frozen.update(i for i in node.input if i in net.consts)
        else:
            used_elsewhere.update(i for i in node.input if i in net.consts)
    return (frozen - used_elsewhere) & set(net.trainable)


@dataclass
class Feature:
    """An inner tensor the student matches: `name` in both graphs, `keep` the teacher's channels the
    student still has along `axis` (None: all)."""
    name: str
    axis: int
    keep: np.ndarray | None = None


def _feature_loss(jax, teacher: Model, features: list[Feature], fit: CalibData):
    """f(x, student tensors) -> mean over features of the squared error against the teacher's kept
    channels, each channel weighted by the inverse of its variance (floored like the outputs'). The
    teacher runs in JAX inside the step: storing its inner tensors for every sample would take
    gigabytes on a detector."""
    from prunec.onnx_jax import JaxGraph

    jnp = jax.numpy
    tnet = JaxGraph(teacher.to_proto())
    tparams = {k: jnp.asarray(v) for k, v in tnet.params().items()}
    names = [f.name for f in features]
    keeps = [None if f.keep is None else jnp.asarray(np.flatnonzero(f.keep)) for f in features]
    probe = {k: v[:16][:, None] for k, v in fit.groups[0].items() if k in tnet.inputs}
    sample = jax.jit(jax.vmap(lambda x: tnet.run(tparams, x, names)))(probe)
    scales = []
    for f, k, t in zip(features, keeps, sample):
        t = np.asarray(t)[:, 0]  # [samples, *tensor shape without its batch]
        ax = f.axis - 1
        if k is not None:
            t = np.take(t, np.asarray(k), axis=ax + 1)
        var = np.moveaxis(t, ax + 1, -1).reshape(-1, t.shape[ax + 1]).var(0).astype(np.float64)
        w = 1.0 / np.maximum(var, channel_floor(var))
        shape = [1] * (t.ndim - 1)
        shape[ax] = t.shape[ax + 1]
        scales.append(jnp.asarray(w.reshape([1] + shape).astype(np.float32)))

    def loss(x, student_values):
        tv = jax.lax.stop_gradient(tnet.run(tparams, x, names))
        total = 0.0
        for f, k, t, y, w in zip(features, keeps, tv, student_values, scales):
            if k is not None:
                t = jnp.take(t, k, axis=f.axis)
            total = total + jnp.mean(jnp.square(y - t) * w)
        return total / len(features)
    return loss


def inner_targets(analysis, plan) -> list[Feature]:
    """The outputs of the refitted layers (prunec.recovery.refit.find_layers) with the channels they
    kept: where the least-squares refit aimed, now matched jointly."""
    from prunec.layers import refit_kind
    from prunec.recovery.refit import find_layers

    nodes = {n.name: n for n in analysis.graph.nodes}
    return [Feature(l.y, refit_kind(nodes[l.name]).channel_axis(len(analysis.model.shapes[l.y])), l.out_mask)
            for l in find_layers(analysis, plan)]
