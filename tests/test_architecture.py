"""Architecture rules of issue 17 that a refactor must keep: no import cycles among prunec's modules
(prunec/ and passes/, the TVM backend aside), no module over ~600 lines, recovery never reaching up
into the passes that use it, and one registry per extension point."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for base, pkg in ((ROOT / "prunec", "prunec"), (ROOT / "passes", "prunec.passes")):
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if not name.startswith("prunec.backend"):
                out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `name` imports, at any depth (a lazy import is still a dependency)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            # the package's own __init__ (registries: the decorator it defines, imported by the rule
            # files it imports last) and the top-level API module are no layer of their own
            if t and t != name and t != "prunec" and not name.startswith(t + "."):
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_correctly():
    graph = _graph()
    assert "prunec.recovery.stream" in graph["prunec.recovery.refit"]
    assert "prunec.layers" in graph["prunec.macs"]
    assert "prunec.passes.shrink" in graph["prunec.passes.prune"]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_recovery_never_imports_the_passes():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("prunec.recovery"):
            assert not [d for d in deps if d.startswith("prunec.passes")], name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_small(name):
    lines = _modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by job"


def test_registries_feed_the_cli():
    from prunec import criteria
    from prunec.cli import prune_parser
    from prunec.layers import KINDS

    action = next(a for a in prune_parser()._actions if a.dest == "criterion")
    assert list(action.choices) == ["auto", *criteria.CRITERIA]
    for name, crit in criteria.CRITERIA.items():
        assert name in action.help and crit.help in action.help
    assert set(KINDS) == {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM",
                          "ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"}


def test_a_new_criterion_is_one_registered_class(tmp_path):
    """What adding a criterion takes: a class and its registration; the CLI and the pipeline follow."""
    import numpy as np

    import prunec
    from models.zoo import build
    from prunec import criteria
    from prunec.cli import prune_parser
    from prunec.pipeline import PruneOptions, prune_model

    @criteria.register
    class Reversed(criteria.Criterion):  # keeps the last channels: the opposite of natural order
        name, help = "test-reversed", "keeps the last channels"

        def score(self, analysis, group, evidence):
            return np.arange(group.size, dtype=np.float64)

    try:
        assert "test-reversed" in next(a for a in prune_parser()._actions if a.dest == "criterion").choices
        model = prunec.from_proto(build("resnet18"))
        _, report, plan = prune_model(model, PruneOptions(ratio=0.5, criterion="test-reversed", round_to=1))
        assert report["criterion"] == "test-reversed"
        assert all(idx == list(range(len(idx))) for idx in plan.groups.values())  # lowest scores go first
    finally:
        del criteria.CRITERIA["test-reversed"]
