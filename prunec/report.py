"""What prunec tells users: group listings, coverage, and the report.json of a run."""
from __future__ import annotations

from .dependency import Analysis
from .layers import kind_of
from .macs import node_macs
from .sparsity import format_annotation, read_annotation
from .subgraphs import all_nodes
from .version import __version__

# report.json's layout version (schema: prunec/report.schema.json); bumped when a field changes meaning.
SCHEMA_VERSION = 1


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
    for node in all_nodes(analysis.graph):  # If/Loop/Scan bodies too
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
    total = sum(node_macs(n, analysis.model.shapes) for n in all_nodes(analysis.graph)) or 1
    out = []
    for g in analysis.groups:
        out.append({
            "id": g.id,
            "size": g.size,
            "prunable": g.prunable,
            "reasons": g.blocked if g.blocked else ([] if g.size > 1 else ["single channel"]),
            "approximate": g.inexact,
            "macs_share": g.macs / total,
            "nodes": _group_nodes(g),
            "members": [{"tensor": m.tensor, "axis": m.axis, "role": m.role,
                         "channel_width": int(m.positions.shape[1])} for m in g.members],
        })
    return out


def _group_nodes(g) -> dict[str, list[str]]:
    """The nodes whose weights a group shrinks: producers of its channels (role out), consumers
    (in), and the rest (norm/bias/shift: BatchNorm, biases, per-channel constants)."""
    out: dict[str, list[str]] = {"out": [], "in": [], "other": []}
    for m in g.members:
        if not m.node:
            continue
        key = m.role if m.role in ("out", "in") else "other"
        if m.node not in out[key]:
            out[key].append(m.node)
    out["other"] = [n for n in out["other"] if n not in out["out"] and n not in out["in"]]  # biases: same node
    return out


def per_group_counts(summary: list[dict], removed: dict[str, int]) -> list[dict]:
    """Every group with channels kept/removed; status pruned, kept (prunable, nothing removed) or skipped."""
    rows = []
    for g in summary:
        r = removed.get(g["id"], 0)
        status = "skipped" if not g["prunable"] else ("pruned" if r else "kept")
        rows.append({"id": g["id"], "size": g["size"], "kept": g["size"] - r, "removed": r, "status": status,
                     "macs_share": round(g["macs_share"], 6)})
    return rows


def new_report(original: str, pruned: str, input_shapes: dict, command: str | None) -> dict:
    """The report of a run that compiles a given pair without pruning it (`prunec compile A B`)."""
    return {"schema_version": SCHEMA_VERSION, "prunec_version": __version__, "command": command,
            "input": original, "output": pruned, "input_shapes": input_shapes}


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


INSPECT_LEGEND = """\
group id: the weight whose axis produces the group's channels, and that axis: conv1.weight[0] is the
  output channels of conv1.weight; a suffix .N is the N-th piece when that axis holds several groups
  (attention heads x head dims, Concat/Split parts). --exclude takes these ids, node names or op types.
size: channels in the group. members: (tensor, axis) pairs that change together when it is pruned.
MACs: share of the model's MACs in the layers the group's channels flow through. A layer counts for
  every group it touches (its input and output channels), so the shares overlap and add up to more
  than 100%."""


def format_inspect(info: dict, width: int = 100, nodes: bool = True) -> str:
    lines = [f"{info['model']}: {info['nodes']} nodes, {len(info['groups'])} channel groups, "
             f"{info['prunable']} prunable"]
    w = max([len("group")] + [len(g["id"]) for g in info["groups"]])
    lines.append(f"{'group':<{w}} {'size':>6} {'MACs':>6}  {'members':>7}  status")
    for g in info["groups"]:
        status = "prunable" + (" (approximate: " + g["approximate"][0] + ")" if g["approximate"] else "")
        if not g["prunable"]:
            status = "skipped: " + "; ".join(g["reasons"])
        lines.append(f"{g['id']:<{w}} {g['size']:>6} {100 * g['macs_share']:>5.1f}%  {len(g['members']):>7}  {status}")
        if nodes and g.get("nodes"):
            parts = [f"{k} " + ", ".join(v) for k, v in g["nodes"].items() if v]
            text = "    nodes: " + "; ".join(parts)
            lines.append(text if len(text) <= width else text[:width - 1] + "…")
    if info["unsupported_ops"]:
        lines.append("ops without a channel rule: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["unsupported_ops"].items())))
    for note in info["notes"]:
        lines.append(f"note: {note}")
    c = info["coverage"]
    lines.append(f"coverage: {c['weight_tensors_prunable']}/{c['weight_tensors']} Conv/Gemm/MatMul weight tensors "
                 f"({100 * c['weight_share']:.1f}%), {100 * c['macs_share']:.1f}% of {c['macs']:,} MACs "
                 "can be shrunk by a prunable group")
    lines += format_annotation(info.get("sparsity") or {})
    lines.append("")
    lines.append(INSPECT_LEGEND)
    return "\n".join(lines)
