"""The HTML report renders in a real headless browser, and the figures on the page are report.json's."""
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import onnx
import pytest

from models.zoo import build
from tests.cli_helpers import run_prunec as run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Fields(HTMLParser):
    """data-field/data-value pairs, the images' sources, and the visible text of a page."""

    def __init__(self):
        super().__init__()
        self.fields, self.images, self.text = {}, [], []
        self._open = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if "data-field" in a:
            self.fields[a["data-field"]] = {"value": a.get("data-value"), "text": ""}
            self._open.append(a["data-field"])
        elif tag not in ("img", "br", "meta"):
            self._open.append(None)

    def handle_endtag(self, tag):
        if self._open and tag not in ("img", "br", "meta"):
            self._open.pop()

    def handle_data(self, data):
        self.text.append(data)
        for f in self._open:
            if f:
                self.fields[f]["text"] += data


def _lookup(report: dict, field: str):
    value = report
    for part in field.split("."):
        if part == "length":
            return len(value)
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("×", "").strip())


def _render(page: Path, tmp_path: Path) -> tuple[str, Path]:
    """The DOM after Chromium loaded the page, and a screenshot of it."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    res = subprocess.run(args + ["--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    return dom.stdout, shot


def _check_page(report: dict, dom: str, shot: Path, min_fields: int):
    page = _Fields()
    page.feed(dom)
    assert len(page.fields) >= min_fields
    for field, shown in page.fields.items():
        expected = _lookup(report, field)
        assert shown["value"] == str(expected), field  # the page's own record of the number...
        assert _number(shown["text"]) == pytest.approx(float(expected), rel=1e-3, abs=1e-3), field  # ...and what it shows
    text = " ".join(page.text)
    for s in report["groups"]["skipped"]:
        assert s["id"] in text and all(r in text for r in s["reasons"])
    # charts embedded as data URIs (the page stands alone), each a real SVG
    assert page.images and all(src.startswith("data:image/svg+xml;base64,") for src in page.images)
    # the screenshot is a drawn page, not a blank one
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    assert img.size == (1200, 2000) and len(colors) > 50
    assert any(r < 100 and g < 150 and b > 200 for _, (r, g, b) in colors)  # the blue of the bars


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium; .ci/run installs it)")
def test_html_report_renders_and_matches_report_json(tmp_path):
    pytest.importorskip("matplotlib")
    src = tmp_path / "mobilenetv2.onnx"
    onnx.save(build("mobilenetv2"), src)
    res = run(src, "--ratio", "0.5", "-o", tmp_path / "out", "--html")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    page = tmp_path / "out" / "report.html"
    assert page.is_file() and f"report: {page}" in res.stdout  # a view beside the published report.json
    dom, shot = _render(page, tmp_path)
    _check_page(report, dom, shot, min_fields=8 + 3 * len(report["groups"]["per_group"]))

    # `prunec report OUTDIR` writes the same page again from report.json alone
    page.unlink()
    res = run("report", tmp_path / "out")
    assert res.returncode == 0 and page.is_file(), res.stderr


def test_report_command_errors_are_one_line(tmp_path):
    res = run("report", tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("prunec: error:") and "no report.json" in res.stderr


def test_page_without_matplotlib_still_has_every_table(tmp_path, monkeypatch):
    from prunec import html_report

    report = {"input": "m.onnx", "output": "o/m.pruned.onnx", "input_shapes": {"x": [1, 3, 8, 8]},
              "params": {"before": 10, "after": 5}, "macs": {"before": 100, "after": 40},
              "groups": {"total": 1, "prunable": 1, "pruned": 1, "channels_removed": 4, "skipped": [],
                         "per_group": [{"id": "c.weight[0]", "size": 8, "kept": 4, "removed": 4, "status": "pruned"}]},
              "verify": {"checker": "passed", "onnxruntime": "ran", "output_shapes": "unchanged", "ok": True}}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    out = html_report.render(report)
    assert "pip install 'prunec[report]'" in out and "<img" not in out
    assert "data-field='groups.per_group.0.kept' data-value='4'" in out


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_compile_a_prune_run_later_and_report_its_latencies(tmp_path):
    """`prunec MODEL -o OUT` then `prunec compile OUT --target x86 --html`: a real TVM run added to the
    prune run's report; ORT and TVM latencies (median, p10, p90) on the page are the report's."""
    pytest.importorskip("matplotlib")
    jsonschema = pytest.importorskip("jsonschema")
    from models.recognizer import text_recognizer

    onnx.save(text_recognizer(), tmp_path / "rec.onnx")
    assert run(tmp_path / "rec.onnx", "-o", tmp_path / "out", "-q").returncode == 0
    res = run("compile", tmp_path / "out", "--target", "x86", "--rounds", "2", "--repeat", "3", "--html")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.validate(report, json.loads((Path(__file__).parents[1] / "prunec" / "report.schema.json").read_text()))
    x86 = report["targets"]["x86"]
    assert x86["measured"] and x86["target"]["kind"] == "llvm" and x86["macs_ratio"] > 1
    assert set(x86["timing_noise"]["spread"]) == {"TVM original", "TVM pruned", "ONNX Runtime original",
                                                  "ONNX Runtime pruned"}
    dom, shot = _render(tmp_path / "out" / "report.html", tmp_path)
    _check_page(report, dom, shot, min_fields=8 + 12 + 1)  # sizes/groups, 4 latencies x 3, the speedup
    assert "targets.x86.models.pruned.latency_ms.p90" in dom
