"""The backend's modules form layers: no import cycles (lazy imports inside functions count),
every module imports on its own, none is over 600 lines, and every CPU schedule rule and
target is registered once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "prunec" / "backend"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(BACKEND.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """prunec.backend modules that `name` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_import_cycles():
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for dep in _imports(name, path, set(mods)):
            g.add_edge(name, dep)
    assert g.has_edge("prunec.backend.cpu.rules", "prunec.backend.cpu.schedule.conv")
    assert g.has_edge("prunec.backend.build", "prunec.backend.targets")  # a lazy import
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles
    # the layering the cpu package documents: nothing below imports the rules or the targets
    for low in ("prunec.backend.cpu.facts", "prunec.backend.cpu.compute.conv",
                "prunec.backend.cpu.schedule.common", "prunec.backend.cpu.rule"):
        above = nx.descendants(g, low)
        assert not above & {"prunec.backend.cpu.rules", "prunec.backend.targets",
                            "prunec.backend.build"}, (low, above)


def test_every_module_imports_alone():
    """Each module imported first, in a fresh set of prunec modules (another interpreter: this
    one's modules stay as the other tests imported them)."""
    pytest.importorskip("tvm")
    script = (
        "import importlib, sys\n"
        f"for name in {list(_modules())!r}:\n"
        "    for m in [m for m in sys.modules if m == 'prunec' or m.startswith('prunec.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in BACKEND.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_rules_and_targets_registered_once():
    pytest.importorskip("tvm")
    from prunec.backend.cpu import RULES
    from prunec.backend.cpu.rule import Rule
    from prunec.backend.targets import TARGETS, default_round_to

    names = [r.name for r in RULES]
    assert len(set(names)) == len(names) and all(isinstance(r, Rule) for r in RULES)
    assert names[-1] == "generic"  # takes every function: last
    assert default_round_to() == {"none": 8, "x86": 16, "arm": 8, "cuda": 8}
    assert all(t.name == n for n, t in TARGETS.items())


def test_a_new_rule_is_one_class_in_the_list(tmp_path):
    """What adding a CPU schedule rule takes: a Rule subclass (its own file) and its place in
    the list; the dispatcher reports it by name."""
    pytest.importorskip("tvm")
    import onnx

    from prunec.backend import frontend
    from prunec.backend.cpu import RULES, schedule_module
    from prunec.backend.cpu.rule import Rule
    from prunec.backend.targets.cpu import fuse
    from schedule_helpers import host_target
    from test_backend_nets import tiny_convnet

    class ParallelTranspose(Rule):  # layout changes: one parallel loop over the channel blocks
        name = "parallel_transpose"
        block = "te_layout_transform"

        def schedule(self, sch, lanes, threads):
            sch.parallel(sch.get_loops(sch.get_sblock(self.block))[1])

    onnx.save(tiny_convnet(), tmp_path / "m.onnx")
    mod, _ = frontend.import_onnx(tmp_path / "m.onnx", {"input": [1, 3, 32, 32]})
    tgt = host_target()
    applied: dict = {}
    rules = RULES[:-1] + [ParallelTranspose()] + RULES[-1:]
    schedule_module(fuse(mod, tgt), tgt, applied, rules=rules)
    transforms = {f: r for f, r in applied.items() if f.startswith("te_layout_transform")}
    assert transforms and set(transforms.values()) == {"parallel_transpose"}, applied
    assert {"conv2d", "depthwise_nchwc", "generic"} <= set(applied.values())


def test_a_new_target_is_one_class_in_the_registry(monkeypatch):
    """What adding a target takes: a DeployTarget subclass (its own file) and one registry
    line; the CLI's --target choices and the default rounding follow."""
    from prunec.backend import targets
    from prunec.backend.targets.cpu import CpuTarget
    from prunec.cli import prune_parser

    class Riscv(CpuTarget):
        name = "riscv"
        round_to = 4

        def config(self, opts):
            return {"kind": "llvm", "mtriple": "riscv64-linux-gnu", "num-cores": 1}

    monkeypatch.setitem(targets.TARGETS, "riscv", Riscv())
    assert targets.get_target("riscv").round_to == 4
    assert targets.default_round_to()["riscv"] == 4
    assert prune_parser().parse_args(["m.onnx", "--target", "riscv"]).target == "riscv"
