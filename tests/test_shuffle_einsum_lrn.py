"""Channel shuffle, pixel shuffle, Einsum and LRN rules."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import prunec
from models.pixel_shuffle import pixel_shuffle_sr
from models.shufflenet import shufflenetv2
from prunec.pipeline import PruneOptions, prune_model

from exactness import check_exact


def test_channel_shuffle_prunes_the_same_count_in_every_shuffle_group():
    model = prunec.from_proto(shufflenetv2())
    pruned, report, _ = prune_model(model, PruneOptions(ratio=0.5, round_to=1))
    assert report["verify"]["ok"] and report["groups"]["skipped"] == [
        g for g in report["groups"]["skipped"] if "graph" in " ".join(g["reasons"])]
    for node in pruned.graph.nodes:
        if node.op == "Reshape" and len(node.inputs[1].values) == 5:
            _, groups, per_group, _, _ = node.inputs[1].values
            c = pruned.shapes[node.inputs[0].name][1]
            assert groups == 2 and c == 2 * per_group  # still two shuffle groups of equal size


def test_depth_to_space_channel_owns_its_pixel_block():
    for mode, reps in (("CRD", 4), ("DCR", 4)):
        analysis = prunec.analyze(prunec.from_proto(pixel_shuffle_sr(mode=mode)))
        g = next(g for g in analysis.prunable_groups if g.size == 16 and any(
            m.tensor == "conv.weight_2" for m in g.members))
        w = next(m for m in g.members if m.tensor == "conv.weight_2" and m.axis == 0)
        assert w.positions.shape == (16, reps)
        # DCR: channel c at c + 16*k; CRD: at 4c .. 4c+3
        assert (np.diff(w.positions[0]) == (16 if mode == "DCR" else 1)).all()


def _einsum_lrn_net():
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("LRN", ["h"], ["hn"], size=3),
        n("Relu", ["hn"], ["r"]),
        n("Einsum", ["r", "p.w"], ["e"], equation="nchw,oc->nohw"),   # a 1x1 conv as Einsum
        n("Relu", ["e"], ["er"]),
        n("Reshape", ["er", "flat"], ["t"]),                             # [1, 24, 64] -> tokens
        n("Einsum", ["t", "q.w"], ["y"], equation="bct,cd->btd"),
    ]
    inits = [w("c1.w", 16, 3, 3, 3), w("c1.b", 16), w("p.w", 24, 16), w("q.w", 24, 5),
             numpy_helper.from_array(np.array([1, 24, 64], np.int64), "flat")]
    g = helper.make_graph(nodes, "einsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_einsum_contractions_and_lrn():
    analysis = prunec.analyze(prunec.from_proto(_einsum_lrn_net()))
    conv = analysis.group("c1.w[0]")
    assert conv.prunable and any("LRN" in r for r in conv.inexact)  # approximate, like LayerNorm
    proj = analysis.group("p.w[0]")
    assert proj.prunable and {m.tensor for m in proj.members if m.role == "in"} == {"q.w"}
    n_groups, _ = check_exact(_einsum_lrn_net())
    assert n_groups == 1  # the Einsum projection (the conv's group is approximate: left out)
