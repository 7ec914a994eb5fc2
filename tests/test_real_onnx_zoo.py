"""Real architectures shipped inside the onnx wheel (onnx/backend/test/data/light): opset 9 exports whose
weights are computed by ConstantOfShape nodes and listed as graph inputs. They exercise the importer
(opset upgrade, IR<4 inputs, constant folding) and the rules on DenseNet/Inception/SqueezeNet Concats."""
from pathlib import Path

import onnx
import pytest

import prunec
from prunec.pipeline import PruneOptions, prune_model

from exactness import check_exact
from tests.exactness import assert_verified

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = {"light_resnet50": 0.99, "light_densenet121": 0.99, "light_inception_v1": 0.9,
          "light_squeezenet": 0.99, "light_shufflenet": 0.6}


@pytest.mark.parametrize("name", MODELS)
def test_real_architecture_prunes(name):
    path = LIGHT / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not shipped by this onnx version")
    model = prunec.load(path)
    assert any("upgraded" in n for n in model.notes)
    info = prunec.inspect(model)
    assert info["coverage"]["macs_share"] >= MODELS[name]
    assert all(g["reasons"] for g in info["skipped"])
    _, report, _ = prune_model(model, PruneOptions(ratio=0.5))
    assert_verified(report, model)
    assert report["macs"]["after"] < report["macs"]["before"]


@pytest.mark.parametrize("name", ["light_squeezenet", "light_inception_v1"])
def test_concat_heavy_models_prune_exactly(name):
    path = LIGHT / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not shipped by this onnx version")
    proto = prunec.load(path).to_proto()
    n_groups, _ = check_exact(proto)
    assert n_groups > 10
