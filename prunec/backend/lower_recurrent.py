"""LSTM, GRU and RNN nodes rewritten into primitive ONNX ops for a static sequence length.

TVM 0.27's Relax ONNX importer has no recurrent converters, so before import each recurrent node
becomes: one MatMul of the whole input sequence by the input weights of every direction (where
nearly all of the node's FLOPs are), then per time step only the small h x R^T product and the
gate arithmetic. Every step has the same shapes, so the compiled kernels repeat (the kernel cache
compiles each distinct one once). A node whose semantics this does not cover (clip, custom
activation parameters, varying sequence_lens, batch-first layout...) is refused with a
PrunecError naming the attribute, never lowered approximately."""

from __future__ import annotations

import numpy as np

from prunec.errors import PrunecError

RECURRENT = ("LSTM", "GRU", "RNN")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_ACTS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}  # the ones without parameters


def has_recurrent(model) -> bool:
    return any(n.op_type in RECURRENT and n.domain in ("", "ai.onnx") for n in model.graph.node)


def lower_recurrent(model, input_shapes: dict[str, list[int]] | None = None):
    """The model with every LSTM/GRU/RNN of its main graph replaced by primitive ops; the model
    itself when it has none. input_shapes pins the graph inputs' dims (the sequence length must
    follow from them)."""
    import onnx

    if not has_recurrent(model):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in (input_shapes or {}):
            vi.type.tensor_type.shape.Clear()
            for v in input_shapes[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = int(v)
    m = onnx.shape_inference.infer_shapes(m)  # the sequence length and batch of each X
    g = m.graph
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)
    shapes = _static_shapes(g)
    consts = _constants(g)
    nodes, lowered = [], set()
    for node in g.node:
        if node.op_type in RECURRENT and node.domain in ("", "ai.onnx"):
            b = _Builder(node, opset, len(nodes))
            _lower(node, b, shapes, consts)
            nodes += b.nodes
            g.initializer.extend(b.inits)
            lowered.update(i for i in node.input if i)
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used or t.name not in lowered]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


def _static_shapes(g) -> dict[str, list[int]]:
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def _constants(g) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


class _Builder:
    """Nodes and initializers of one lowered node, named after it."""

    def __init__(self, node, opset: int, serial: int):
        self.prefix = f"{node.name or node.output[0]}.lowered{serial}"
        self.opset, self.nodes, self.inits, self._n = opset, [], [], 0
        self._index: dict[tuple, str] = {}

    def _name(self) -> str:
        self._n += 1
        return f"{self.prefix}.{self._n}"

    def const(self, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name()
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self._name()
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def gates(self, x: str, sizes: list[int], axis: int) -> list[str]:
        """x cut into consecutive pieces along axis, as one Slice per piece: each slice fuses
        into the elementwise kernel that reads it, where a Split per step stayed a function of
        its own (two per step: the schedule phase grew with the sequence length)."""
        outs, lo = [], 0
        for size in sizes:
            outs.append(self._slice(x, lo, lo + size, axis))
            lo += size
        return outs

    def _slice(self, x: str, lo: int, hi: int, axis: int) -> str:
        if self.opset < 10:
            return self.op("Slice", [x], starts=[lo], ends=[hi], axes=[axis])
        return self.op("Slice", [x] + [self._ints(v) for v in (lo, hi, axis)])

    def _ints(self, v: int) -> str:
        """A one-element int64 initializer, shared by every step."""
        if (v,) not in self._index:
            self._index[(v,)] = self.const(np.array([v], np.int64))
        return self._index[(v,)]

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        from onnx import helper

        if len(sizes) == 1:
            return [self.op("Identity", [x])]
        outs = [self._name() for _ in sizes]
        if self.opset >= 13:
            sizes_name = self.const(np.array(sizes, np.int64))
            node = helper.make_node("Split", [x, sizes_name], outs, name=outs[0], axis=axis)
        else:
            node = helper.make_node("Split", [x], outs, name=outs[0], axis=axis, split=sizes)
        self.nodes.append(node)
        return outs


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else \
            [s.decode() if isinstance(s, bytes) else s for s in v] if isinstance(v, list) else v
    return out


def _refuse(node, what: str):
    raise PrunecError(f"{node.op_type} node {node.name or node.output[0]!r}: {what} is not "
                      "supported by prunec's recurrent lowering for TVM (prunec/backend/"
                      "lower_recurrent.py); without --target the model is pruned for ONNX "
                      "Runtime, which runs it")


def _check_attrs(node, attrs: dict, nd: int) -> list[list[str]]:
    """The activations of each direction; refuses what the lowering does not implement."""
    for key, default in (("clip", None), ("input_forget", 0), ("layout", 0)):
        if key in attrs and attrs[key] != default:
            _refuse(node, f"attribute {key}={attrs[key]}")
    for key in ("activation_alpha", "activation_beta"):
        if attrs.get(key):
            _refuse(node, f"attribute {key}")
    names = attrs.get("activations") or _DEFAULT_ACTS[node.op_type] * nd
    k = len(_DEFAULT_ACTS[node.op_type])
    if len(names) != k * nd:
        _refuse(node, f"attribute activations={names} (expected {k} per direction)")
    acts = []
    for a in names:
        if a.lower() not in _ACTS:
            _refuse(node, f"activation {a!r}")
        acts.append(_ACTS[a.lower()])
    return [acts[d * k:(d + 1) * k] for d in range(nd)]


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _const_input(node, i: int, consts: dict, what: str) -> np.ndarray | None:
    name = _input(node, i)
    if not name:
        return None
    if name not in consts:
        _refuse(node, f"{what} computed at run time (input {name!r})")
    return consts[name]


def _lower(node, b: _Builder, shapes: dict, consts: dict) -> None:
    attrs = _attrs(node)
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        _refuse(node, f"direction={direction!r}")
    nd = 2 if direction == "bidirectional" else 1
    acts = _check_attrs(node, attrs, nd)
    w = _const_input(node, 1, consts, "W")
    r = _const_input(node, 2, consts, "R")
    gates = _GATES[node.op_type]
    hidden = r.shape[-1]
    x_shape = shapes.get(node.input[0])
    if x_shape is None or len(x_shape) != 3:
        _refuse(node, f"input {node.input[0]!r} without a static shape (sequence length)")
    steps, batch, _ = x_shape
    bias = _const_input(node, 3, consts, "B")
    if bias is None:
        bias = np.zeros((nd, 2 * gates * hidden), w.dtype)
    lens = _const_input(node, 4, consts, "sequence_lens")
    if lens is not None and np.any(lens != steps):
        _refuse(node, f"sequence_lens {lens.tolist()} shorter than the sequence ({steps})")
    peep = _const_input(node, 7, consts, "P") if node.op_type == "LSTM" else None
    lbr = node.op_type == "GRU" and attrs.get("linear_before_reset", 0) != 0

    # Biases of R fold into the input projection, except GRU's candidate gate when
    # linear_before_reset puts it inside r * (...).
    wb, rb = bias[:, :gates * hidden], bias[:, gates * hidden:]
    x_bias = wb + rb
    if lbr:
        x_bias[:, 2 * hidden:] = wb[:, 2 * hidden:]
    wt = np.concatenate([w[d].T for d in range(nd)], axis=1)  # [input, nd*gates*hidden]
    xw = b.op("Add", [b.op("MatMul", [node.input[0], b.const(wt)]),
                      b.const(x_bias.reshape(-1))])
    per_dir = b.split(xw, [gates * hidden] * nd, axis=2)
    h0 = _initial(node, 5, b, consts, nd, batch, hidden)
    c0 = _initial(node, 6, b, consts, nd, batch, hidden) if node.op_type == "LSTM" else [None] * nd
    step = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}[node.op_type]
    ys, hs, cs = [], [], []
    for d in range(nd):
        xs = b.split(per_dir[d], [1] * steps, axis=0)  # [1, batch, gates*hidden] per step
        reverse = direction == "reverse" or d == 1
        cell = _Cell(b, r[d].T.copy(), hidden, acts[d], lbr, rb[d], peep[d] if peep is not None
                     else None)
        h, c, out = h0[d], c0[d], [None] * steps
        for t in (reversed(range(steps)) if reverse else range(steps)):
            h, c = step(cell, xs[t], h, c)
            out[t] = h
        ys.append(out)
        hs.append(h)
        cs.append(c)
    _outputs(node, b, ys, hs, cs, steps, batch, hidden)


def _initial(node, i: int, b: _Builder, consts: dict, nd: int, batch: int,
             hidden: int) -> list[str | None]:
    """Per direction the initial state as a [1, batch, hidden] name, None where it is zero (the
    first step then skips the recurrent product)."""
    name = _input(node, i)
    if not name:
        return [None] * nd
    if name in consts:
        v = consts[name].reshape(nd, 1, batch, hidden)
        return [None if not v[d].any() else b.const(v[d]) for d in range(nd)]
    return b.split(name, [1] * nd, axis=0)


class _Cell:
    def __init__(self, b, rt, hidden, acts, lbr, rb, peep):
        self.b, self.hidden, self.acts, self.lbr = b, hidden, acts, lbr
        self.rt_np, self._consts = rt, {}
        self.rb_h = rb[2 * hidden:3 * hidden] if lbr else None
        self.peep = [b.const(p) for p in np.split(peep, 3)] if peep is not None else None

    def rt(self, lo: int, hi: int) -> str:
        """Columns lo:hi of R^T as one initializer, shared by every step."""
        if (lo, hi) not in self._consts:
            self._consts[lo, hi] = self.b.const(self.rt_np[:, lo:hi])
        return self._consts[lo, hi]

    def rec_bias(self) -> str:
        """GRU linear_before_reset: the bias added to h x R^T, zero for z and r (their recurrent
        biases are in the input projection)."""
        if "rec_bias" not in self._consts:
            full = np.concatenate([np.zeros(2 * self.hidden, self.rt_np.dtype), self.rb_h])
            self._consts["rec_bias"] = self.b.const(full)
        return self._consts["rec_bias"]


def _lstm_step(cell: _Cell, x: str, h, c):
    b, n = cell.b, cell.hidden
    f_act, g_act, h_act = cell.acts
    pre = x if h is None else b.op("Add", [x, b.op("MatMul", [h, cell.rt(0, 4 * n)])])
    gi, go, gf, gc = b.gates(pre, [n] * 4, axis=2)  # ONNX's gate order: i, o, f, c
    if cell.peep is not None and c is not None:
        gi = b.op("Add", [gi, b.op("Mul", [c, cell.peep[0]])])
        gf = b.op("Add", [gf, b.op("Mul", [c, cell.peep[2]])])
    ic = b.op("Mul", [b.op(f_act, [gi]), b.op(g_act, [gc])])
    c_new = ic if c is None else b.op("Add", [b.op("Mul", [b.op(f_act, [gf]), c]), ic])
    if cell.peep is not None:
        go = b.op("Add", [go, b.op("Mul", [c_new, cell.peep[1]])])
    return b.op("Mul", [b.op(f_act, [go]), b.op(h_act, [c_new])]), c_new


def _gru_step(cell: _Cell, x: str, h, _c):
    b, n = cell.b, cell.hidden
    f_act, g_act = cell.acts
    xzr, xh = b.gates(x, [2 * n, n], axis=2)  # ONNX's gate order: z, r, h
    if cell.lbr:
        if h is None:
            rzr, rh = None, b.const(cell.rb_h)
        else:
            rec = b.op("Add", [b.op("MatMul", [h, cell.rt(0, 3 * n)]), cell.rec_bias()])
            rzr, rh = b.gates(rec, [2 * n, n], axis=2)
        zr = b.op(f_act, [xzr if rzr is None else b.op("Add", [xzr, rzr])])
        z, r = b.gates(zr, [n, n], axis=2)
        cand = b.op(g_act, [b.op("Add", [xh, b.op("Mul", [r, rh])])])
    else:
        zr = b.op(f_act, [xzr if h is None else
                          b.op("Add", [xzr, b.op("MatMul", [h, cell.rt(0, 2 * n)])])])
        z, r = b.gates(zr, [n, n], axis=2)
        cand = b.op(g_act, [xh if h is None else
                            b.op("Add", [xh, b.op("MatMul", [b.op("Mul", [r, h]),
                                                             cell.rt(2 * n, 3 * n)])])])
    if h is None:  # (1 - z) * cand
        return b.op("Sub", [cand, b.op("Mul", [z, cand])]), None
    # (1 - z) * cand + z * h, with one product fewer
    return b.op("Add", [cand, b.op("Mul", [z, b.op("Sub", [h, cand])])]), None


def _rnn_step(cell: _Cell, x: str, h, _c):
    b = cell.b
    pre = x if h is None else b.op("Add", [x, b.op("MatMul", [h, cell.rt(0, cell.hidden)])])
    return b.op(cell.acts[0], [pre]), None


def _outputs(node, b: _Builder, ys, hs, cs, steps: int, batch: int, hidden: int) -> None:
    """Y [steps, directions, batch, hidden], Y_h and Y_c [directions, batch, hidden], each
    built only when the graph uses it."""
    nd = len(ys)
    y, y_h, y_c = (_input_out(node, i) for i in range(3))
    if y:
        shape = b.const(np.array([steps, 1, batch, hidden], np.int64))
        parts = [b.op("Reshape", [b.op("Concat", seq, axis=0) if steps > 1 else seq[0], shape])
                 for seq in ys]
        b.op("Concat", parts, out=y, axis=1) if nd > 1 else b.op("Identity", parts, out=y)
    for name, last in ((y_h, hs), (y_c, cs)):
        if not name:
            continue
        if any(v is None for v in last):  # a zero-length path cannot happen: steps >= 1
            _refuse(node, "a sequence of length 0")
        b.op("Concat", last, out=name, axis=0) if nd > 1 else b.op("Identity", last, out=name)


def _input_out(node, i: int) -> str:
    return node.output[i] if len(node.output) > i else ""
