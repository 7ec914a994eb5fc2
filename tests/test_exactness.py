"""Removing channels that contribute nothing leaves outputs identical, on every test model."""
import numpy as np
import pytest

import prunec
from models.zoo import BUILDERS, build
from prunec.runtime import random_inputs, run_model

from exactness import check_exact, random_plan

MODELS = [name for name in BUILDERS if name != "resnet50_full"]


@pytest.mark.parametrize("name", MODELS)
def test_zeroed_channels_prune_exactly(name):
    n_groups, err = check_exact(build(name), ratio=0.5, seed=0)
    assert n_groups > 0, "the property must be exercised on some group"


@pytest.mark.parametrize("name", ["resnet18", "vit", "yolov8"])
def test_pruning_live_channels_changes_outputs(name):
    """Guard against a vacuous property: without zeroing, the same plan must change the outputs."""
    model = prunec.from_proto(build(name))
    analysis = prunec.analyze(model)
    plan = random_plan(analysis, 0.5, 0)
    pruned = prunec.prune(analysis, plan)
    p0, p1 = model.to_proto(), pruned.to_proto()
    feeds = random_inputs(p0, model.input_shapes, seed=3)
    a, b = run_model(p0, feeds)[0], run_model(p1, feeds)[0]
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) > 1e-4
