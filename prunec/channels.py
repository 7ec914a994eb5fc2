"""Channel spaces: the algebra the dependency analysis is built on.

Every (tensor, axis) of the graph is described by a *space*: a set of indices along that axis.
A space is either a leaf (a set of channels that can be pruned together), or refined into
  - a concat of smaller spaces (Concat, Split, Slice: offsets along the axis), or
  - a product of spaces (Reshape/Flatten, attention heads, groups: index = mixed radix).
Op rules *unify* spaces (union-find); unifying refined spaces aligns their structure, splitting
or factoring leaves where needed. A leaf that is the root of its class is one pruning group:
removing its channel k removes the positions of k in every (tensor, axis) whose space contains it.
"""
from __future__ import annotations

from math import prod

import numpy as np

LEAF, CONCAT, PRODUCT = None, "concat", "product"
MAX_REASONS = 4


class Space:
    __slots__ = ("id", "size", "parent", "kind", "children", "blocked", "inexact")

    def __init__(self, id_: int, size: int):
        self.id = id_
        self.size = size
        self.parent: Space | None = None
        self.kind = LEAF
        self.children: list[Space] = []
        self.blocked: list[str] = []
        self.inexact: list[str] = []

    def __repr__(self) -> str:  # debugging aid
        return f"Space#{self.id}({self.size}{'' if self.kind is None else ',' + self.kind})"


class SpaceTable:
    """Owns every space of one analysis."""

    def __init__(self) -> None:
        self._count = 0

    # ------------------------------------------------------------------ creation
    def new(self, size: int, blocked: str | None = None) -> Space:
        s = Space(self._count, int(size))
        self._count += 1
        if blocked:
            s.blocked.append(blocked)
        return s

    def concat(self, parts: list[Space]) -> Space:
        parts = [p for p in parts if p.size > 0]
        if len(parts) == 1:
            return parts[0]
        s = self.new(sum(p.size for p in parts))
        s.kind, s.children = CONCAT, list(parts)
        return s

    def product(self, factors: list[Space]) -> Space:
        factors = [f for f in factors if f.size != 1] or factors[:1]
        if len(factors) == 1:
            return factors[0]
        s = self.new(prod(f.size for f in factors))
        s.kind, s.children = PRODUCT, list(factors)
        return s

    # ------------------------------------------------------------------ union-find
    def find(self, s: Space) -> Space:
        root = s
        while root.parent is not None:
            root = root.parent
        while s.parent is not None and s.parent is not root:  # path compression
            s.parent, s = root, s.parent
        return root

    def leaves(self, s: Space) -> list[Space]:
        s = self.find(s)
        if s.kind is LEAF:
            return [s]
        out: list[Space] = []
        for c in s.children:
            out.extend(self.leaves(c))
        return out

    def block(self, s: Space, reason: str) -> None:
        for leaf in self.leaves(s):
            _add(leaf.blocked, reason)

    def mark_inexact(self, s: Space, reason: str) -> None:
        for leaf in self.leaves(s):
            _add(leaf.inexact, reason)

    def unify(self, a: Space, b: Space, where: str) -> bool:
        """Make a and b the same index set; False (and both blocked) when their structures conflict."""
        a, b = self.find(a), self.find(b)
        if a is b:
            return True
        if a.size != b.size:
            self._conflict(a, b, f"sizes {a.size} and {b.size} meet at {where}")
            return False
        if a.kind is LEAF or b.kind is LEAF:
            leaf, other = (a, b) if a.kind is LEAF else (b, a)
            leaf.parent = other
            for reason in leaf.blocked:
                self.block(other, reason)
            for reason in leaf.inexact:
                self.mark_inexact(other, reason)
            return True
        if a.kind == CONCAT or b.kind == CONCAT:
            ok = self._align(self._concat_parts(a), self._concat_parts(b), self._split_leaf, where)
        else:
            ok = self._align(self._factors(a), self._factors(b), self._factor_leaf, where)
        if not ok:
            self._conflict(a, b, f"incompatible channel layouts at {where}")
            return False
        a, b = self.find(a), self.find(b)
        if a is not b:
            a.parent = b
        return True

    def split(self, s: Space, sizes: list[int], where: str) -> list[Space] | None:
        """Refine s into consecutive pieces of the given sizes (Split, Slice)."""
        pieces = [self.new(n) for n in sizes]
        whole = self.concat(pieces) if len(pieces) > 1 else pieces[0]
        return pieces if self.unify(s, whole, where) else None

    def factor(self, s: Space, sizes: list[int], where: str) -> list[Space] | None:
        """Refine s into a product of the given sizes, outermost first (Reshape, heads, groups)."""
        pieces = [self.new(n) for n in sizes]
        return pieces if self.unify(s, self.product(pieces), where) else None

    # ------------------------------------------------------------------ alignment
    def _concat_parts(self, s: Space) -> list[Space]:
        s = self.find(s)
        if s.kind == CONCAT:
            return [p for c in s.children for p in self._concat_parts(c)]
        return [s] if s.size > 0 else []

    def _factors(self, s: Space) -> list[Space]:
        s = self.find(s)
        if s.kind == PRODUCT:
            return [f for c in s.children for f in self._factors(c)]
        return [s] if s.size != 1 else []

    def _split_leaf(self, leaf: Space, first: int) -> tuple[Space, Space]:
        return self._refine(leaf, CONCAT, [first, leaf.size - first])

    def _factor_leaf(self, leaf: Space, outer: int) -> tuple[Space, Space] | None:
        if leaf.size % outer:
            return None
        return self._refine(leaf, PRODUCT, [outer, leaf.size // outer])

    def _refine(self, leaf: Space, kind: str, sizes: list[int]) -> tuple[Space, Space]:
        parts = [self.new(n) for n in sizes]
        for p in parts:
            p.blocked, p.inexact = list(leaf.blocked), list(leaf.inexact)
        leaf.kind, leaf.children = kind, parts
        leaf.blocked, leaf.inexact = [], []
        return parts[0], parts[1]

    def _align(self, xs: list[Space], ys: list[Space], refine, where: str) -> bool:
        xs, ys = list(xs), list(ys)
        while xs and ys:
            x, y = self.find(xs.pop(0)), self.find(ys.pop(0))
            if x.size == y.size:
                if not self.unify(x, y, where):
                    return False
                continue
            big, small, big_rest = (x, y, xs) if x.size > y.size else (y, x, ys)
            if big.kind == PRODUCT and refine == self._split_leaf:
                # a concat cut through a product (Split after a channel shuffle): cut its outer factor
                parts = self._distribute(big, small.size)
                if parts is None:
                    return False
                big_rest[:0] = parts
                (ys if big is x else xs).insert(0, small)
                continue
            if big.kind == CONCAT and refine == self._factor_leaf:
                # concat meets factors (Concat then a shuffle's Reshape): take as many factors as
                # make up the concat and align the two as concat vs product
                small_rest = ys if big is x else xs
                group, size = [small], small.size
                while size < big.size and small_rest:
                    group.append(self.find(small_rest.pop(0)))
                    size *= group[-1].size
                if size != big.size or not self.unify(big, self.product(group), where):
                    return False
                continue
            if big.kind is not LEAF:
                return False
            pieces = refine(big, small.size)
            if pieces is None or not self.unify(pieces[0], small, where):
                return False
            big_rest.insert(0, pieces[1])
        return not xs and not ys

    def _distribute(self, s: Space, first: int) -> list[Space] | None:
        """product(outer, rest...) as consecutive pieces product(piece of outer, rest...), the first
        piece `first` long: possible when `first` is a whole number of `rest` blocks. The pieces
        share the inner factors, so channel k of `rest` stays one channel in every piece."""
        factors = self._factors(s)
        outer, rest = self.find(factors[0]), factors[1:]
        inner = prod(f.size for f in rest)
        if not rest or first % inner:
            return None
        if outer.kind is LEAF:
            parts = list(self._split_leaf(outer, first // inner))
        elif outer.kind == CONCAT:
            parts = self._concat_parts(outer)
        else:
            return None
        return [self.product([p] + rest) for p in parts]

    def _conflict(self, a: Space, b: Space, reason: str) -> None:
        self.block(a, reason)
        self.block(b, reason)

    # ------------------------------------------------------------------ index maps
    def positions(self, s: Space, only: set[Space] | None = None) -> dict[Space, np.ndarray]:
        """For each leaf in s (or each leaf of `only` in s): an int array [leaf.size, reps] of the
        axis positions of each channel. Restricting to `only` keeps spatial and batch leaves, which
        are no channels, from being materialized position by position (an axis can be 1e9 long)."""
        s = self.find(s)
        if only is not None and not self._contains(s, only):
            return {}
        if s.kind is LEAF:
            return {s: np.arange(s.size, dtype=np.int64)[:, None]}
        out: dict[Space, list[np.ndarray]] = {}
        if s.kind == CONCAT:
            offset = 0
            for c in s.children:
                for leaf, pos in self.positions(c, only).items():
                    out.setdefault(leaf, []).append(pos + offset)
                offset += c.size
        else:
            sizes = [c.size for c in s.children]
            strides = [prod(sizes[i + 1:]) for i in range(len(sizes))]
            for i, c in enumerate(s.children):
                if only is not None and not self._contains(c, only):
                    continue
                # offsets contributed by every combination of the other factors
                base = np.zeros(1, dtype=np.int64)
                for j, (n, st) in enumerate(zip(sizes, strides)):
                    if j != i:
                        base = (base[:, None] + np.arange(n, dtype=np.int64)[None, :] * st).ravel()
                for leaf, pos in self.positions(c, only).items():
                    full = pos[:, :, None] * strides[i] + base[None, None, :]
                    out.setdefault(leaf, []).append(full.reshape(pos.shape[0], -1))
        return {leaf: np.concatenate(p, axis=1) if len(p) > 1 else p[0] for leaf, p in out.items()}

    def _contains(self, s: Space, only: set[Space]) -> bool:
        return any(self.find(leaf) in only for leaf in self.leaves(s))

    def kept_size(self, s: Space, removed: dict[Space, np.ndarray]) -> int:
        s = self.find(s)
        if s.kind is LEAF:
            return s.size - len(removed.get(s, ()))
        sizes = [self.kept_size(c, removed) for c in s.children]
        return sum(sizes) if s.kind == CONCAT else prod(sizes)

    def keep_mask(self, s: Space, removed: dict[Space, np.ndarray]) -> np.ndarray | None:
        """Boolean mask over the axis, or None when nothing in s is removed."""
        leaves = {leaf for leaf in self.leaves(s) if len(removed.get(leaf, ()))}
        if not leaves:
            return None
        mask = np.ones(self.find(s).size, dtype=bool)
        for leaf, pos in self.positions(s, only=leaves).items():
            mask[pos[removed[leaf]].ravel()] = False
        return mask


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons and len(reasons) < MAX_REASONS:
        reasons.append(reason)
