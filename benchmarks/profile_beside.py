"""A pruned model's kernel calls beside its original's (profile_layers.py --beside ORIGINAL).

Efficiency is (original ms / pruned ms) / (original MACs / pruned MACs): below 1, some of the
pruned model's time did not shrink with its MACs. Both models are the same graph with fewer
channels, so they run the same kernels in the same order; paired call by call, each pruned call
gets its excess over the original's call divided by the whole model's MAC ratio (the sum of
excesses is the time to cut for efficiency 1), and its own work ratio: a call whose work did not
shrink (the stem, the detection head's fixed-size tail) has excess for that reason, a call whose
work did shrink but whose time did not as much runs slower per MAC than the original's.
"""

from __future__ import annotations

import math
import re

# kernels whose work is output elements x the reduction over input channels; any other
# (elementwise, copies, pools, softmax) does work in proportion to its output
_REDUCING = ("conv2d", "winograd", "matmul", "dense")


def op_chain(name: str) -> str:
    """The kernel's ops without numbering; a Winograd conv counts as a conv (a pruned layer may
    pass the Winograd weight-size limit where its original did not), and its crop of padded
    output channels (winograd.padded_out_channels: pruned counts that are not whole vectors)
    is part of it."""
    name = name.replace("_prunec_wino_channels", "")
    return re.sub(r"\d+", "", name.replace("winograd", "conv2d"))


def pair_calls(orig_rows: list, pruned_rows: list) -> list[tuple]:
    """[(original row, pruned row)] in call order; SystemExit when the two models do not run the
    same kernel sequence (not a model and its pruned copy)."""
    if len(orig_rows) != len(pruned_rows) or any(
            op_chain(a[0]) != op_chain(b[0]) for a, b in zip(orig_rows, pruned_rows)):
        raise SystemExit("profile_layers: --beside: the two models do not run the same kernels "
                         f"in the same order ({len(orig_rows)} and {len(pruned_rows)} calls); "
                         "give a model and what prunec made of it")
    return list(zip(orig_rows, pruned_rows))


def work(name: str, shapes: list) -> float:
    """A call's work in arbitrary units comparable between the two models' same call: output
    elements, times the input channels (dim 1 of a 4-d input, else its last dim) for a
    reducing kernel."""
    out = math.prod(shapes[-1]) if shapes else 1
    if any(k in name for k in _REDUCING) and len(shapes) > 1:
        first = shapes[0]
        out *= first[1] if len(first) == 4 else first[-1]
    return float(out)


def beside(orig_rows: list, pruned_rows: list, mac_ratio: float) -> dict:
    """Per call (excess us, pruned us, original us, work ratio, time ratio, name, shapes), slowest
    excess first, and totals: kernels' us in both models, the time to cut for efficiency 1, and
    `at_original_rate`: the pruned kernels' us if every call whose work shrank ran at its
    original's time per unit of work (and every other as it does)."""
    calls, ideal = [], 0.0
    for (n_o, s_o, t_o, _), (n_p, s_p, t_p, _) in pair_calls(orig_rows, pruned_rows):
        w = work(n_o, s_o) / max(work(n_p, s_p), 1.0)
        ideal += min(t_p, t_o / w) if w > 1 else t_p
        calls.append((t_p - t_o / mac_ratio, t_p, t_o, w, t_o / t_p if t_p else 0.0, n_p, s_p))
    calls.sort(key=lambda c: -c[0])
    total_o, total_p = sum(c[2] for c in calls), sum(c[1] for c in calls)
    return {"calls": calls, "orig_us": total_o, "pruned_us": total_p,
            "excess_us": total_p - total_o / mac_ratio, "at_original_rate_us": ideal}


def report(result: dict, mac_ratio: float, model_ms: tuple[float, float], top: int) -> list[str]:
    o_ms, p_ms = model_ms
    eff = o_ms / p_ms / mac_ratio
    # the gap between a model's time and its kernels' sum (the VM, cache effects) is kept as is
    gap = p_ms * 1e3 - result["pruned_us"]
    ceiling = o_ms * 1e3 / (result["at_original_rate_us"] + gap) / mac_ratio
    lines = [f"beside the original: MACs {mac_ratio:.2f}x fewer; model {o_ms:.3f} -> {p_ms:.3f} ms "
             f"({o_ms / p_ms:.2f}x, efficiency {eff:.2f}); kernels {result['orig_us'] / 1e3:.3f} -> "
             f"{result['pruned_us'] / 1e3:.3f} ms",
             f"  to cut for efficiency 1.0: {result['excess_us'] / 1e3:.3f} ms of kernels; every call "
             f"at its original's time per unit of work: {result['at_original_rate_us'] / 1e3:.3f} ms "
             f"(efficiency {ceiling:.2f})",
             f"  {'excess':>8}  {'pruned':>8}  {'original':>8}  {'work x':>6}  {'time x':>6}"]
    for exc, t_p, t_o, w, tx, name, shp in result["calls"][:top]:
        lines.append(f"  {exc:8.1f}  {t_p:8.1f}  {t_o:8.1f}  {w:6.2f}  {tx:6.2f}  {name:<48} "
                     f"{' '.join(map(str, shp))}")
    return lines
