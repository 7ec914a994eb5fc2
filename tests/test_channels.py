"""The channel-space algebra: unify, split, factor, and index maps."""
import numpy as np

from prunec.channels import SpaceTable


def test_concat_then_split_realigns():
    t = SpaceTable()
    a, b = t.new(4), t.new(6)
    cat = t.concat([a, b])
    p, q = t.split(cat, [5, 5], "test")
    # p = a + first channel of b; q = the rest of b
    leaves_p = t.leaves(p)
    assert [lf.size for lf in leaves_p] == [4, 1]
    assert t.find(leaves_p[0]) is t.find(a)
    pos = t.positions(cat)
    assert sorted(v.shape[0] for v in pos.values()) == [1, 4, 5]


def test_factor_heads_and_head_dim():
    t = SpaceTable()
    d = t.new(8)
    heads, hd = t.factor(d, [2, 4], "reshape")
    pos = t.positions(d)
    assert pos[t.find(heads)].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a head is a block
    assert pos[t.find(hd)].tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]  # a head dim is strided
    removed = {t.find(heads): np.array([1])}
    assert t.kept_size(d, removed) == 4
    assert t.keep_mask(d, removed).tolist() == [True] * 4 + [False] * 4


def test_flatten_block_mapping():
    t = SpaceTable()
    c, h, w = t.new(3), t.new(2, blocked="spatial"), t.new(2, blocked="spatial")
    feat = t.new(12)
    assert t.unify(t.product([c, h, w]), feat, "flatten")
    assert t.positions(feat)[t.find(c)].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert not t.find(c).blocked


def test_blocked_propagates_through_union_and_refinement():
    t = SpaceTable()
    a, b = t.new(8), t.new(8, blocked="graph output")
    t.unify(a, b, "add")
    x, y = t.split(a, [3, 5], "split")
    assert t.find(x).blocked == ["graph output"] and t.find(y).blocked == ["graph output"]


def test_incompatible_layouts_block_both_sides():
    t = SpaceTable()
    s = t.new(6)
    t.factor(s, [2, 3], "r1")
    other = t.concat([t.new(4), t.new(2)])
    assert not t.unify(s, other, "weird")
    assert all(lf.blocked for lf in t.leaves(s))
