# The two quick-start commands (see README): `make demo` and `make test`.
# Both create .venv and install prunec into it when needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-arm bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Main job on a bundled model: build a small ResNet deterministically, prune it by half, verify, report.
demo: $(STAMP)
	$(BIN)/python -m models.build resnet18 -o out/models
	$(BIN)/prunec inspect out/models/resnet18.onnx
	$(BIN)/prunec out/models/resnet18.onnx --ratio 0.5 --target none -o out/demo
	@echo "report: out/demo/report.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Prove the aarch64 artifact under qemu through TVM RPC (root needed; ~10 min the first time).
test-arm: $(STAMP)
	tools/arm_emulator/setup.sh
	$(BIN)/python -m pytest -q -m slow tests/test_arm_emulation.py

clean:
	rm -rf out .pytest_cache
