# trtdeploy: every target bootstraps .venv from pyproject.toml when it is missing or stale.
#   make engine MODEL=clip [PRESET=...] [PRECISION=fp32] [TARGET=auto] [WEIGHTS=dir] [OUT=dir]
#                  TARGET=tensorrt without TensorRT or a GPU: the bundle is built and verified, then
#                  `trtdeploy build` exits 7 (make reports "Error 7" and itself exits 2) after printing
#                  the `trtdeploy engine` line to run on the device
#   make test      lint + the test suite (what CI runs)
#   make lint      ruff + mypy
#   make bench MODEL=clip [PRECISION=...] [BATCH=1,8]    JSON, Markdown, PNG in build/bench/
#   make bench MODEL=clipseg [PROMPTS=1,3,8]              also: segment one image with P prompts vs eager
#   make bench MODEL=florence2 [ITERATIONS=3 BLOCKS=2]    per graph, first token, decoder tokens/s, end to end vs generate()
#   make peers [THREADS=1]   CLIP zero-shot beside Hugging Face Optimum's export (FP32, INT8), in .venv-peers
#   make regress [MODEL=clip PRECISION=fp32]              fresh build + bench vs baselines/ (exit 8 on regression)
#   make baseline MODEL=clip PRECISION=fp32 [RUNS=3] [PROMPTS=1,3 ITERATIONS=6 BLOCKS=2]   record a baseline for this machine class
#   make soak [SOAK_BUNDLE=dir] [SOAK_SECONDS=600] [SOAK_THREADS=8]
#                  one bundle under concurrent load: results equal to a serial run, no errors,
#                  bounded memory growth (exit 1 names the failing figure)
#   make tiny-models [TINY_OUT=build/tiny-models]        retrain the shapes models, check the committed figures
#                  (TINY_OUT=models/weights replaces the committed folders instead)
#   make clean     remove build outputs (make distclean also removes .venv)

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
MODEL     ?= clip
PRECISION ?= fp32
TARGET    ?= auto
# Florence-2-base's vision tower alone takes seconds a call here: one image, fewer, shorter blocks.
BATCH     ?= $(if $(filter florence2,$(MODEL)),1,1,8)
ITERATIONS ?= $(if $(filter florence2,$(MODEL)),3,)
BLOCKS    ?= $(if $(filter florence2,$(MODEL)),2,)
OUT       ?= build/$(MODEL)/$(PRECISION)
# open_clip_torch carries the CLIP BPE vocabulary; only that data file is read, so it is installed
# without its dependencies (which would pull torchvision and a second torch).
OPEN_CLIP := open_clip_torch==3.3.0
# TensorRT's Python API as type stubs (the 10.13 API), so mypy checks the TensorRT modules on machines
# without TensorRT. The wheel is downloaded without its dependencies (it requires tensorrt itself,
# which does not install here) and checked against its sha256. It is unpacked into .typecheck/
# rather than installed: installed, its bare `tensorrt/` folder would import as an empty namespace
# package and make TensorRT look present. The copy is patched where the generated stub is not
# valid Python: parameters named `in`, and `channel_axis` without a default after defaulted ones.
TRT_STUBS_VERSION := 10.13.0.35.1
TRT_STUBS_WHEEL   := tensorrt_stubs-$(TRT_STUBS_VERSION)-py3-none-any.whl
TRT_STUBS_SHA256  := 749a36a1f825db0800a82d0dabbf7ef49f3a9edc1e794c9545fb94a551613fea
TRT_STUBS_STAMP   := .typecheck/.tensorrt-stubs-$(TRT_STUBS_VERSION)

.PHONY: setup engine test lint typecheck-tree typecheck-stubs bench peers regress baseline soak tiny-models clean distclean

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

# bench: every bundle of MODEL under build/MODEL/ (fp32, fp16, int8), or the PRECISION named on the
# command line; writes JSON, Markdown and a PNG to build/bench/.
BENCH_BUNDLES = $(if $(filter command line environment,$(origin PRECISION)),$(OUT),$(wildcard $(addprefix build/$(MODEL)/,fp32 fp16 int8)))
bench: $(STAMP)
	@test -n "$(BENCH_BUNDLES)" || { echo "no bundle under build/$(MODEL)/; run: make engine MODEL=$(MODEL)"; exit 3; }
	$(BIN)/trtdeploy bench $(BENCH_BUNDLES) --batch $(BATCH) --target $(TARGET) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		$(if $(PROMPTS),--prompts $(PROMPTS)) $(if $(ITERATIONS),--iterations $(ITERATIONS)) $(if $(BLOCKS),--blocks $(BLOCKS))

# peers: CLIP zero-shot of one photograph against 10 labels, five sides in alternating blocks of one
# run, THREADS threads each: PyTorch eager, Optimum's ONNX export FP32 and ORTQuantizer INT8, the
# FP32 and INT8 bundles. optimum-onnx 0.1.0 pins transformers < 4.58 while this project needs 5, so
# it gets its own venv (the same CPU torch, and trtdeploy for its runtime); the reference weights
# cross over as a save_pretrained folder that `peers save` checks against the bundle's hash.
PEERS_VENV    := .venv-peers
PEERS_BIN     := $(PEERS_VENV)/bin
PEERS_STAMP   := $(PEERS_VENV)/.installed
PEERS_WEIGHTS := build/peers/clip-weights
THREADS       ?= 1

$(PEERS_STAMP): pyproject.toml Makefile
	@test -x $(PEERS_BIN)/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/python -m pip install --quiet --upgrade pip
	$(PEERS_BIN)/python -m pip install --quiet torch==2.13.0 'optimum-onnx[onnxruntime]==0.1.0' -e .
	@touch $(PEERS_STAMP)

peers: $(STAMP) $(PEERS_STAMP)
	@for p in fp32 int8; do test -f build/clip/$$p/manifest.json || \
		{ echo "no bundle at build/clip/$$p; run: make engine MODEL=clip PRECISION=$$p"; exit 3; }; done
	$(BIN)/python -m trtdeploy.peers save build/clip/fp32 --out $(PEERS_WEIGHTS)
	$(PEERS_BIN)/python -m trtdeploy.peers compare $(PEERS_WEIGHTS) build/clip/fp32 build/clip/int8 \
		--threads $(THREADS)

# regress: rebuild every configuration with a baseline in any machine class (or MODEL/PRECISION
# named on the command line) and check its accuracy; benchmark and check latency only where this
# machine class has a baseline, else report it as not checked. Exits 8 on a regression.
regress: $(STAMP)
	$(BIN)/trtdeploy regress $(if $(filter command line environment,$(origin MODEL)),$(MODEL) --precision $(PRECISION) \
		$(if $(PRESET),--preset $(PRESET)))

# baseline: record (overwrite, deliberately) the baseline of MODEL/PRECISION from RUNS runs.
RUNS ?= 3
baseline: $(STAMP)
	$(BIN)/trtdeploy regress $(MODEL) --precision $(PRECISION) $(if $(PRESET),--preset $(PRESET)) \
		--batch $(BATCH) --write-baseline --runs $(RUNS) $(if $(PROMPTS),--prompts $(PROMPTS)) \
		$(if $(ITERATIONS),--iterations $(ITERATIONS)) $(if $(BLOCKS),--blocks $(BLOCKS))

# soak: one loaded bundle shared by SOAK_THREADS threads for SOAK_SECONDS, every answer checked
# against a serial run, errors counted, resident memory growth from mid-run bounded.
SOAK_BUNDLE  ?= $(OUT)
SOAK_THREADS ?= 8
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(BIN)/python -m trtdeploy.soak $(SOAK_BUNDLE) --threads $(SOAK_THREADS) --seconds $(SOAK_SECONDS) \
		--target $(TARGET) $(if $(MAX_GROWTH_MIB),--max-growth-mib $(MAX_GROWTH_MIB))

# mypy resolves modules from folders; the package maps trtdeploy.* onto top-level folders, so lint
# type-checks a generated tree of links that mirrors the import names.
typecheck-tree:
	@rm -rf .typecheck/trtdeploy && mkdir -p .typecheck/trtdeploy
	@for f in frontdoor/*.py; do ln -s ../../$$f .typecheck/trtdeploy/; done
	@for d in models export calibration runtime; do ln -s ../../$$d .typecheck/trtdeploy/$$d; done

typecheck-stubs: $(TRT_STUBS_STAMP)

$(TRT_STUBS_STAMP): $(STAMP) Makefile
	@rm -rf .typecheck/tensorrt .typecheck/tensorrt_bindings .typecheck/.tensorrt-stubs-* .typecheck/download
	$(BIN)/python -m pip download --quiet --no-deps --dest .typecheck/download \
		tensorrt-stubs==$(TRT_STUBS_VERSION)
	$(BIN)/python -c "import hashlib, sys; d = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest(); \
		sys.exit(0 if d == sys.argv[2] else f'{sys.argv[1]}: sha256 {d}, expected {sys.argv[2]}')" \
		.typecheck/download/$(TRT_STUBS_WHEEL) $(TRT_STUBS_SHA256)
	$(BIN)/python -m zipfile -e .typecheck/download/$(TRT_STUBS_WHEEL) .typecheck/download/unpacked
	cp -R .typecheck/download/unpacked/tensorrt .typecheck/download/unpacked/tensorrt_bindings .typecheck/
	sed -i.orig -e 's/(in: /(in_: /g' -e 's/, in: /, in_: /g' \
		-e 's/, channel_axis: int)/, channel_axis: int = ...)/' .typecheck/tensorrt_bindings/tensorrt.pyi
	@rm -rf .typecheck/download .typecheck/tensorrt_bindings/tensorrt.pyi.orig
	@touch $@

lint: $(STAMP) typecheck-tree typecheck-stubs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p trtdeploy

test: lint
	$(BIN)/pytest -q

# tiny-models: train the committed shapes models from scratch (models/shapes/models.py COMMITTED),
# each scored on the evaluation split, then compare with the committed models/weights/ figures.
# CLIPSeg starts from the CLIP trained just before it, in the same TINY_OUT.
TINY_OUT    ?= build/tiny-models
TINY_MODELS := $(VENV)/bin/python -m trtdeploy.models.shapes
tiny-models: $(STAMP)
	$(TINY_MODELS) train clip --out $(TINY_OUT)/clip-shapes-tiny
	$(TINY_MODELS) train clipseg --out $(TINY_OUT)/clipseg-shapes-tiny
	$(TINY_MODELS) train florence2 --out $(TINY_OUT)/florence2-shapes-tiny
	$(if $(filter models/weights models/weights/,$(TINY_OUT)),,$(TINY_MODELS) compare $(TINY_OUT) models/weights)

clean:
	rm -rf build .typecheck .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -not -path './$(PEERS_VENV)/*' -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(PEERS_VENV) *.egg-info
