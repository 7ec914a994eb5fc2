"""What prunec tells users: group listings, coverage, and the report.json of a run."""
from __future__ import annotations

from .dependency import Analysis
from .layers import kind_of
from .macs import node_macs
from .sparsity import format_annotation, read_annotation


def _prunable_leaves_by_tensor(analysis: Analysis) -> dict[str, bool]:
    prunable = {g.space for g in analysis.prunable_groups}
    out: dict[str, bool] = {}
    for (name, _axis), space in analysis.layouts.items():
        if out.get(name):
            continue
        out[name] = any(analysis.spaces.find(leaf) in prunable for leaf in analysis.spaces.leaves(space))
    return out


def coverage(analysis: Analysis) -> dict:
    """Share of the weighted layers' weights (prunec.layers), and of MACs, that some prunable group can shrink."""
    shrinkable = _prunable_leaves_by_tensor(analysis)
    shapes = analysis.model.shapes
    n_weights = n_weights_ok = macs = macs_ok = 0
    for node in analysis.graph.nodes:
        kind = kind_of(node)
        if kind is None:
            continue
        m = node_macs(node, shapes)
        touched = any(shrinkable.get(t.name) for t in list(node.inputs) + list(node.outputs))
        macs += m
        macs_ok += m if touched else 0
        w = kind.weight_input
        # a dequantized weight (QDQ) counts as the stored integers it is read from
        weights = [analysis.weight_views.get(t.name, t.name) for t in node.inputs[w:w + 1]
                   if analysis.const(t) is not None or t.name in analysis.weight_views]
        n_weights += len(weights)
        n_weights_ok += sum(1 for name in weights if shrinkable.get(name))
    return {
        "weight_tensors": n_weights, "weight_tensors_prunable": n_weights_ok,
        "weight_share": n_weights_ok / n_weights if n_weights else 0.0,
        "macs": macs, "macs_prunable": macs_ok, "macs_share": macs_ok / macs if macs else 0.0,
    }


def groups_summary(analysis: Analysis) -> list[dict]:
    total = sum(node_macs(n, analysis.model.shapes) for n in analysis.graph.nodes) or 1
    out = []
    for g in analysis.groups:
        out.append({
            "id": g.id,
            "size": g.size,
            "prunable": g.prunable,
            "reasons": g.blocked if g.blocked else ([] if g.size > 1 else ["single channel"]),
            "approximate": g.inexact,
            "macs_share": g.macs / total,
            "members": [{"tensor": m.tensor, "axis": m.axis, "role": m.role,
                         "channel_width": int(m.positions.shape[1])} for m in g.members],
        })
    return out


def inspect_dict(analysis: Analysis) -> dict:
    groups = groups_summary(analysis)
    return {
        "model": analysis.model.source,
        "nodes": len(analysis.graph.nodes),
        "groups": groups,
        "prunable": sum(g["prunable"] for g in groups),
        "skipped": [{"id": g["id"], "size": g["size"], "reasons": g["reasons"]} for g in groups if not g["prunable"]],
        "unsupported_ops": analysis.unsupported,
        "coverage": coverage(analysis),
        "notes": analysis.model.notes,
        "sparsity": read_annotation(analysis.model.annotations),
    }


def format_inspect(info: dict, width: int = 100) -> str:
    lines = [f"{info['model']}: {info['nodes']} nodes, {len(info['groups'])} channel groups, "
             f"{info['prunable']} prunable"]
    lines.append(f"{'group':<44} {'size':>6} {'MACs':>6}  {'members':>7}  status")
    for g in info["groups"]:
        status = "prunable" + (" (approximate: " + g["approximate"][0] + ")" if g["approximate"] else "")
        if not g["prunable"]:
            status = "skipped: " + "; ".join(g["reasons"])
        gid = g["id"] if len(g["id"]) <= 44 else "…" + g["id"][-43:]
        lines.append(f"{gid:<44} {g['size']:>6} {100 * g['macs_share']:>5.1f}%  {len(g['members']):>7}  {status}")
    if info["unsupported_ops"]:
        lines.append("ops without a channel rule: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["unsupported_ops"].items())))
    for note in info["notes"]:
        lines.append(f"note: {note}")
    c = info["coverage"]
    lines.append(f"coverage: {c['weight_tensors_prunable']}/{c['weight_tensors']} Conv/Gemm/MatMul weight tensors "
                 f"({100 * c['weight_share']:.1f}%), {100 * c['macs_share']:.1f}% of {c['macs']:,} MACs "
                 "can be shrunk by a prunable group")
    lines += format_annotation(info.get("sparsity") or {})
    return "\n".join(lines)
