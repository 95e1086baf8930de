# trtdeploy: every target bootstraps .venv from pyproject.toml when it is missing or stale.
#   make engine MODEL=clip [PRESET=...] [PRECISION=fp32] [TARGET=onnxruntime] [WEIGHTS=dir] [OUT=dir]
#   make test      lint + the test suite (what CI runs)
#   make lint      ruff + mypy
#   make bench MODEL=clip [BATCH=1,8]
#   make clean     remove build outputs (make distclean also removes .venv)

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
MODEL     ?= clip
PRECISION ?= fp32
TARGET    ?= onnxruntime
BATCH     ?= 1,8
OUT       ?= build/$(MODEL)/$(PRECISION)
# open_clip_torch carries the CLIP BPE vocabulary; only that data file is read, so it is installed
# without its dependencies (which would pull torchvision and a second torch).
OPEN_CLIP := open_clip_torch==3.3.0

.PHONY: setup engine test lint typecheck-tree bench clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(OPEN_CLIP)
	@touch $(STAMP)

engine: $(STAMP)
	$(BIN)/trtdeploy build $(MODEL) --precision $(PRECISION) --target $(TARGET) --out $(OUT) \
		$(if $(PRESET),--preset $(PRESET)) $(if $(WEIGHTS),--weights $(WEIGHTS))

bench: $(STAMP)
	$(BIN)/trtdeploy bench $(OUT) --batch $(BATCH) --target $(TARGET) $(if $(WEIGHTS),--weights $(WEIGHTS))

# mypy resolves modules from folders; the package maps trtdeploy.* onto top-level folders, so lint
# type-checks a generated tree of links that mirrors the import names.
typecheck-tree:
	@rm -rf .typecheck && mkdir -p .typecheck/trtdeploy
	@for f in frontdoor/*.py; do ln -s ../../$$f .typecheck/trtdeploy/; done
	@for d in models export calibration runtime; do ln -s ../../$$d .typecheck/trtdeploy/$$d; done

lint: $(STAMP) typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p trtdeploy

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf build .typecheck .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
