"""What prunec records about its own work: in report.json and inside the pruned model.

The pruned model carries one metadata_props entry, PROVENANCE_KEY (a Model annotation), holding JSON: prunec's version,
the command line, what was pruned and at which input shapes the figures were taken. Every entry the
input model had (Ultralytics' names/stride/imgsz, a producer's own keys) is kept beside it. Pruning a
pruned model nests the earlier record under "previous".
"""
from __future__ import annotations

import json
from pathlib import Path
import shlex
import sys

from .version import __version__

ANNOTATION = "provenance"  # Model.annotations key; graph.py saves it as "prunec.provenance"
PROVENANCE_KEY = "prunec." + ANNOTATION


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again (`prunec ...`), shell-quoted."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["prunec"] + [shlex.quote(str(a)) for a in args])


def provenance(report: dict, command: str | None, previous=None) -> dict:
    g = report["groups"]
    record = {
        "tool": "prunec",
        "version": __version__,
        "command": command,
        "input": Path(report["input"]).name,  # the file name only: no local paths inside a shipped model
        "input_shapes": report["input_shapes"],
        "criterion": report.get("criterion"),
        "ratio": report.get("ratio"),
        "target_macs": report.get("target_macs"),
        "target_latency": (report.get("latency_budget") or {}).get("share"),
        "groups_pruned": g["pruned"],
        "channels_removed": g["channels_removed"],
        "macs": report["macs"],
        "params": report["params"],
    }
    record = {k: v for k, v in record.items() if v is not None}
    if previous:
        record["previous"] = previous
    return record


def stamp(model, report: dict, command: str | None):
    """The model with prunec's record as its `provenance` annotation, saved as metadata_props
    PROVENANCE_KEY (JSON); the input's own metadata_props stay as they were."""
    record = provenance(report, command, model.annotations.get(ANNOTATION))
    return model.with_annotations(**{ANNOTATION: json.loads(json.dumps(record, default=float))})
