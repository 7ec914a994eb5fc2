"""Interfaces that fit people's habits: --version, python -m prunec, subcommands, exit codes,
--exclude patterns, inspect's node names and legend, report.json's schema."""
import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_prunec as run

import prunec

SCHEMA = Path(prunec.__file__).parent / "report.schema.json"


def test_version_and_help():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"prunec {prunec.__version__}"
    res = run("--help")
    assert res.returncode == 0
    for command in ("prune", "inspect", "compile", "report", "exit codes"):
        assert command in res.stdout
    res = run()
    assert res.returncode == 2 and "usage: prunec COMMAND" in res.stdout


def test_prune_subcommand_and_bare_model_are_the_same(resnet18_file, tmp_path):
    a = run("prune", resnet18_file, "--ratio", "0.5", "-o", tmp_path / "a", "-q")
    b = run(resnet18_file, "--ratio", "0.5", "-o", tmp_path / "b", "-q")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra = json.loads((tmp_path / "a" / "report.json").read_text())
    rb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert ra["macs"] == rb["macs"] and ra["groups"]["per_group"] == rb["groups"]["per_group"]
    assert ra["command"].startswith("prunec prune ") and rb["command"].startswith("prunec ")
    assert a.stderr == ""  # --quiet: only the result


def test_bad_usage_exit_code_2(resnet18_file, tmp_path):
    res = run("prune", resnet18_file, "--ratio", "1.5", "-o", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.startswith("prunec: error:") and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_exclude_by_node_name_op_type_group_id_and_glob(resnet18_file):
    model = prunec.load(resnet18_file)
    analysis = prunec.analyze(model)
    gid = analysis.prunable_groups[0].id
    conv = next(n for n in analysis.graph.nodes if n.op == "Conv")

    def excluded(patterns):
        a = prunec.analyze(prunec.load(resnet18_file), exclude=patterns)
        return {g.id for g in a.groups if any("excluded by user" in r for r in g.blocked)}

    assert excluded([gid]) == {gid}
    by_node = excluded([conv.name])
    assert by_node and all(g in {x.id for x in analysis.prunable_groups} for g in by_node)
    gemm = next(n for n in analysis.graph.nodes if n.op == "Gemm")
    assert excluded(["Gemm"]) == {g.id for g in analysis.groups if any(m.node == gemm.name and m.role == "out"
                                                                      for m in g.members)}
    all_convs = excluded(["Conv"])
    assert all_convs == {g.id for g in analysis.prunable_groups}  # every group has a Conv producer
    prefix = gid.split(".")[0]
    globbed = excluded([prefix + ".*"])
    assert gid in globbed and globbed <= {g.id for g in analysis.groups if g.id.startswith(prefix + ".")}
    with pytest.raises(prunec.PrunecError, match="matches no node name, op type or group id"):
        prunec.analyze(prunec.load(resnet18_file), exclude=["no_such_thing*"])


def test_exclude_that_matches_nothing_fails_cleanly(resnet18_file, tmp_path):
    res = run(resnet18_file, "--exclude", "cnov1", "-o", tmp_path / "o")
    assert res.returncode == 2 and "--exclude 'cnov1' matches no node name" in res.stderr
    assert not (tmp_path / "o").exists()


def test_inspect_shows_nodes_and_explains_columns(resnet18_file):
    res = run("inspect", resnet18_file)
    assert res.returncode == 0, res.stderr
    assert "    nodes: out " in res.stdout
    assert "shares overlap" in res.stdout and "group id:" in res.stdout
    info = json.loads(run("inspect", resnet18_file, "--json").stdout)
    g = next(g for g in info["groups"] if g["prunable"])
    assert g["nodes"]["out"] and g["nodes"]["in"]
    # ids print whole (no ellipsis), so they can be pasted into --exclude
    for group in info["groups"]:
        assert group["id"] in res.stdout


def test_report_matches_schema_and_counts(resnet18_file, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    res = run(resnet18_file, "--ratio", "0.5", "-o", tmp_path / "o", "--exclude", "Gemm")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(report, schema)
    assert report["schema_version"] == 1 and report["prunec_version"] == prunec.__version__
    per = report["groups"]["per_group"]
    assert len(per) == report["groups"]["total"]
    assert sum(g["removed"] for g in per) == report["groups"]["channels_removed"]
    assert sum(g["status"] == "pruned" for g in per) == report["groups"]["pruned"]
    assert all(g["kept"] + g["removed"] == g["size"] and g["kept"] >= 1 for g in per)
    # a report that breaks the schema is caught: the check can fail
    broken = dict(report, groups=dict(report["groups"], per_group=[dict(per[0], status="gone")]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compile_needs_a_run_or_a_pair(tmp_path):
    res = run("compile", tmp_path, "--target", "x86")
    assert res.returncode == 2 and "has no report.json" in res.stderr
