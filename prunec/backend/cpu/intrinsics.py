"""Tensor intrinsics the schedules tensorize with (registered with TVM on first use)."""

from __future__ import annotations


def even_lanes_intrin(w: int, scope: str = "local") -> str:
    """Name of the registered tensor intrinsic c[0:w] = a[0:2w:2] on float32 rows (a in
    `scope`, c local)."""
    from tvm.s_tir import TensorIntrin

    name = f"prunec_even_lanes_{w}_{scope}"
    if name in _EVEN_INTRINS:
        return name
    TensorIntrin.register(name, _even_lanes(w, scope, vector=False), _even_lanes(w, scope, vector=True),
                          override=True)
    _EVEN_INTRINS.add(name)
    return name


def _even_lanes(w: int, scope: str, vector: bool):
    """c[0:w] = a[0:2w:2]: element by element (the description tensorize matches) or as two
    contiguous vectors and one shuffle of their even lanes (the implementation)."""
    from tvm.script import tirx as T

    vt, idx = f"float32x{w}", [2 * i for i in range(w)]

    # the rows are [columns / 2, 2] (see dwconv_te): the even columns, a [w, 1] view of stride 2
    @T.prim_func(s_tir=True)
    def even_lanes(a: T.Buffer((w, 1), "float32", strides=(2, 1), offset_factor=1, scope=scope),
                   c: T.Buffer((w,), "float32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(a[0:w, 0:1])
            T.writes(c[0:w])
            if vector:  # a Python bool: TVMScript keeps only the branch taken
                c.vstore([0], T.Shuffle([a.vload([0, 0], vt), a.vload([w // 2, 0], vt)], idx))
            else:
                for i in range(w):
                    with T.sblock("even"):
                        vi = T.axis.remap("S", [i])
                        c[vi] = a[vi, 0]

    return even_lanes


_EVEN_INTRINS: set = set()
