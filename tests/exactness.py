"""The exactness property: channels that contribute nothing can be removed without changing outputs.

Zero every weight slice of the chosen channels (producer rows, consumer columns, biases, norm
scales and shifts), then prune exactly those channels: outputs must stay identical.
"""
from __future__ import annotations

import numpy as np

import prunec
from prunec.subgraphs import all_tensors
from prunec.ops.quantize import quant_params
from prunec.plan import Plan, keep_count
from prunec.runtime import random_inputs, run_model

ZEROED_ROLES = ("out", "in", "bias", "norm", "shift")


def random_plan(analysis, ratio=0.5, seed=0, exact_only=True) -> Plan:
    rng = np.random.default_rng(seed)
    plan = Plan()
    for g in analysis.prunable_groups:
        if exact_only and g.inexact:
            continue
        keep = keep_count(g.size, ratio, 1, 1)
        plan.groups[g.id] = sorted(int(i) for i in rng.choice(g.size, g.size - keep, replace=False))
    return plan


def zero_channels(model, analysis, plan) -> "prunec.Model":
    graph = model.graph.copy()
    tensors = all_tensors(graph)  # weights read inside If/Loop/Scan bodies too
    by_id = {g.id: g for g in analysis.groups}
    for gid, idx in plan.groups.items():
        for m in by_id[gid].members:
            if m.role not in ZEROED_ROLES:
                continue
            t = tensors[m.tensor]
            values = np.array(t.values)
            index = [slice(None)] * values.ndim
            index[m.axis] = m.positions[idx].ravel()
            params = quant_params(graph, t) if np.issubdtype(values.dtype, np.integer) else None
            # a quantized weight's zero is its zero point
            zero = np.broadcast_to(params[1], values.shape).astype(values.dtype) if params else 0
            values[tuple(index)] = zero[tuple(index)] if params else 0
            t.values = values
    proto = model.to_proto(graph=graph)  # the declared inputs: dynamic dims stay dynamic
    return prunec.from_proto(proto, input_shapes=model.input_shapes)


def check_exact(proto, ratio=0.5, seed=0, rtol=1e-5):
    """Returns (number of groups pruned, max relative error)."""
    model = prunec.from_proto(proto)
    plan = random_plan(prunec.analyze(model), ratio, seed)
    zeroed = zero_channels(model, prunec.analyze(model), plan)
    analysis = prunec.analyze(zeroed)
    pruned = prunec.prune(analysis, plan)
    prunec.verify(zeroed, pruned)
    zp, pp = zeroed.to_proto(), pruned.to_proto()
    feeds = random_inputs(zp, zeroed.input_shapes, seed=3)
    ref = run_model(zp, feeds)
    out = run_model(pp, feeds)
    worst = 0.0
    for a, b in zip(ref, out):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(np.max(np.abs(a)), 1e-12)
        worst = max(worst, float(np.max(np.abs(a - b)) / scale))
    assert worst <= rtol, f"outputs changed by {worst:.3g} (relative) after removing zeroed channels"
    return len(plan.groups), worst


def assert_verified(report: dict, model) -> None:
    """What verify measured: the pruned model ran on ONNX Runtime, every output has the original
    model's shape, and its values on the random input are finite."""
    v = report["verify"]
    assert v["checker"] == "passed"
    assert v["outputs"] == {o.name: list(model.shapes[o.name]) for o in model.graph.outputs}
    diffs = v["output_difference_random_input"]
    assert diffs and all(np.isfinite(d["max_abs"]) for d in diffs.values()), diffs
