"""The CLI contract: outputs and report.json; bad input gives one clear line and changes nothing."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import prunec

from models.variants import save_with_external_data
from models.zoo import build
from tests.cli_helpers import run_prunec as run
from tests.exactness import assert_verified

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prune_writes_model_and_report(resnet18_file, tmp_path):
    before = digest(resnet18_file)
    res = run(resnet18_file, "--ratio", "0.5", "--target", "none", "-o", tmp_path / "out",
              "--plan-out", tmp_path / "plan.json")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out" / "resnet18.pruned.onnx"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert out.is_file() and report["output"] == str(out)
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["before"] / report["macs"]["after"] >= 2
    assert report["groups"]["pruned"] > 0 and report["groups"]["total"] >= report["groups"]["pruned"]
    assert all(g["reasons"] for g in report["groups"]["skipped"])
    assert_verified(report, prunec.load(resnet18_file))
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert digest(resnet18_file) == before

    # the plan round-trips: applying it again gives the same model
    res2 = run(resnet18_file, "--plan-in", tmp_path / "plan.json", "-o", tmp_path / "again")
    assert res2.returncode == 0, res2.stderr
    a = onnx.load(out)
    b = onnx.load(tmp_path / "again" / "resnet18.pruned.onnx")
    wa = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_inspect_text_and_json(resnet18_file):
    res = run("inspect", resnet18_file)
    assert res.returncode == 0, res.stderr
    assert "coverage:" in res.stdout and "skipped: graph input" in res.stdout
    res = run("inspect", resnet18_file, "--json")
    info = json.loads(res.stdout)
    assert info["coverage"]["macs_share"] >= 0.9
    assert {"id", "size", "prunable", "reasons", "members", "macs_share"} <= set(info["groups"][0])


def _expect_clean_failure(res, outdir: Path, needle: str):
    assert res.returncode != 0
    # a phase that finished before the error may have said how long it took (prunec.progress: over
    # 2 s, e.g. loading a model on a loaded host); the error itself is one line
    lines = [l for l in res.stderr.splitlines() if l.strip() and not re.fullmatch(r"[^:]+: \d+\.\d s.*", l)]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert needle in lines[0], lines[0]
    assert not outdir.exists() or not any(outdir.iterdir())


def test_truncated_file(resnet18_file, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(resnet18_file.read_bytes()[:5000])
    _expect_clean_failure(run(bad, "-o", tmp_path / "o"), tmp_path / "o", "not a valid ONNX model")


def test_not_onnx(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello, I am not a model\n" * 50)
    _expect_clean_failure(run(bad, "-o", tmp_path / "o"), tmp_path / "o", "not a valid ONNX model")


def test_missing_file(tmp_path):
    _expect_clean_failure(run(tmp_path / "nope.onnx", "-o", tmp_path / "o"), tmp_path / "o", "no such file")


def test_bad_ratio(resnet18_file, tmp_path):
    for ratio in ("1.0", "-0.1", "abc"):
        res = run(resnet18_file, "--ratio", ratio, "-o", tmp_path / "o")
        assert res.returncode != 0 and "Traceback" not in res.stderr and "--ratio" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o").exists()


def test_external_data_missing_and_escaping(tmp_path):
    path = Path(save_with_external_data(build("resnet18"), tmp_path / "ext"))
    res = run(path, "-o", tmp_path / "ok")
    assert res.returncode == 0, res.stderr  # the good case works
    proto = onnx.load(path, load_external_data=False)
    esc = tmp_path / "ext" / "edited.onnx"
    cases = [("../escape.bin", "escapes the model's folder"), ("/etc/passwd", "absolute"), ("missing.bin", "is missing")]
    for k, (location, message) in enumerate(cases):
        for t in proto.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save(proto, esc)
        _expect_clean_failure(run(esc, "-o", tmp_path / f"o{k}"), tmp_path / f"o{k}", message)


def test_custom_op(tmp_path):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(m, path)
    _expect_clean_failure(run(path, "-o", tmp_path / "o"), tmp_path / "o", "custom op com.example::FancyOp")


def test_dynamic_shape_without_hint(tmp_path):
    """Dynamic H/W need no hint: analysed at a default size, kept dynamic in the output."""
    m = build("resnet18")
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    path = tmp_path / "dyn.onnx"
    onnx.save(m, path)
    res = run(path, "-o", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["input_shapes"] == {"input": [1, 3, 224, 224]}
    res = run(path, "-o", tmp_path / "o2", "--input-shape", "input=1,3,64,64")
    assert res.returncode == 0, res.stderr
    out = onnx.load(tmp_path / "o2" / "dyn.pruned.onnx")
    assert out.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "height"
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["input_shapes"] == {"input": [1, 3, 64, 64]}


def test_bad_plan(resnet18_file, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "groups": {"no_such_group[0]": [1]}}))
    _expect_clean_failure(run(resnet18_file, "--plan-in", plan, "-o", tmp_path / "o"), tmp_path / "o", "no group")


def test_op_without_rule_is_skipped_with_reason(tmp_path):
    """An op with no channel rule makes its groups unprunable, with the reason, and the run goes on."""
    m = build("resnet18")
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Shrink"  # a standard op prunec has no rule for
    path = tmp_path / "shrink.onnx"
    onnx.save(m, path)
    info = json.loads(run("inspect", path, "--json").stdout)
    assert info["unsupported_ops"] == {"Shrink": 1}
    reasons = [r for g in info["skipped"] for r in g["reasons"]]
    assert any("Shrink has no channel rule" in r for r in reasons)
    res = run(path, "-o", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["groups"]["pruned"] > 0
