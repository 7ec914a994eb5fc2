"""What a pruning run is asked to do (the CLI builds it from its flags; the Python API takes it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .backend.targets import default_round_to

# Channel multiples that suit each target's vector width / matrix units (each target says its own).
DEFAULT_ROUND_TO = default_round_to()


@dataclass
class PruneOptions:
    ratio: float = 0.5
    criterion: str = "auto"  # auto: l2 without calibration data, a data criterion with it
    round_to: int | None = None
    min_keep: int = 1
    global_ranking: bool = False
    exclude: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    fold_bn: bool = False
    plan_in: str | None = None
    plan_out: str | None = None
    target: str = "none"
    # calibration and accuracy recovery (prunec/recovery, run by passes/prune.py)
    calib: object = None  # .npz path, image folder, dict of arrays, iterable of input dicts, CalibData
    preprocess: str | None = None  # for image folders, e.g. "size=320,mean=0,std=255,layout=NCHW,rgb"
    calib_samples: int | None = 512
    calib_mirror: int | None = None  # also use every sample mirrored along this input axis (3: NCHW width)
    target_macs: float | None = None  # share of the original MACs to keep (0.5 = 2x fewer)
    target_latency: float | None = None  # share of the original's measured latency on the target to keep
    backend: object = None  # BackendOptions the --target-latency measurements use (default: the target's)
    protect: bool | None = None  # floors for stem/head/tiny groups; default: on with a budget
    protect_keep: float | None = None  # stem/head floor share; default 0.5 with a refit allocation, else 0.75
    reconstruct: bool | None = None  # default: on when calibration data is given
    recon_mode: str = "auto"
    steps: int | None = None  # rounds; None: auto (passes/prune.py rounds_for)
    sensitivity_samples: int = 16
    allocation: str = "auto"  # --target-macs: probe (sensitivity curves), refit (search with refits), auto
    # accuracy recovery after pruning (with calibration data): refit (least squares, per round), distill
    # (refit, then distillation from the original model; needs jax), none, or auto (distill when jax is
    # installed, else refit: the CLI's default)
    recover: str = "refit"
    # low-rank factorization of large linear layers before pruning (passes/factorize.py; needs calib):
    # None off, else the held-out error allowed per layer as a share of its outputs' variance
    factorize: float | None = None
    recover_budget: float | None = None  # seconds for the whole recovery, distillation last (default passes.distill.DEFAULT_BUDGET_S)
    recover_epochs: int | None = None  # a fixed number of distillation epochs instead of the time budget
    # zeros inside the weights after the channel pruning (passes/sparsify.py); ratio 0 = sparsity only
    sparsity: object = None  # a prunec.passes.sparsify.SparsityOptions
    quantize: str | None = None  # "int8": static QDQ quantization of the pruned model (passes/quantize.py; needs calib)
    command: str | None = None  # the command line, recorded in report.json and the model's provenance
    shape_from_calib: list[str] = field(default_factory=list)  # inputs whose dynamic dims the calib data sized
    calib_shapes: int = 0  # how many sample shapes the calibration data has (the analysis took the most frequent)

    @property
    def rounding(self) -> int:
        """--round-to, or the target's default multiple."""
        return self.round_to if self.round_to is not None else DEFAULT_ROUND_TO.get(self.target, 8)

    @property
    def structured(self) -> bool:
        """Channel pruning asked for: sparsity alone (ratio 0, no MACs budget, no plan) skips it."""
        return (self.sparsity is None or self.ratio > 0 or self.target_macs is not None
                or self.target_latency is not None or bool(self.plan_in))

    @property
    def calibrated(self) -> bool:
        """Calibration data, a MACs budget, several rounds or floors: the calibrated flow (not with a plan)."""
        return (self.calib is not None or self.target_macs is not None or self.target_latency is not None
                or (self.steps or 1) > 1
                or bool(self.protect)) and not self.plan_in
