# omni: every target that needs the Python environment builds it first (idempotent).
#   make demo                      run the offline demo end to end
#   make test                      run the test suite
#   make train-stage1 CONFIG=train/configs/stage1_tiny.yaml ARGS="train.lr=1e-4"
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= train/configs/stage1_tiny.yaml
ARGS ?=
TINY := .cache/tiny
TOY := data/toy

.PHONY: system-deps setup test test-all lint bench demo train-stage1 train-stage2 tiny-assets toy-data clean

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

$(TINY)/llm/config.json: | setup
	$(PY) -m omni.tiny $(TINY)

$(TOY)/train.jsonl: | setup
	$(PY) -m data_recipes.toy $(TOY)

tiny-assets: $(TINY)/llm/config.json
toy-data: $(TOY)/train.jsonl

train-stage1: setup $(if $(findstring tiny,$(CONFIG)),tiny-assets toy-data)
	$(PY) -m train.stage1 --config $(CONFIG) $(ARGS)

train-stage2: setup
	@echo "stage 2 (the CTC speech decoder) is not built yet: see the stage-2 issue" >&2; exit 2

demo: setup tiny-assets toy-data
	$(PY) -m train.stage1 --config train/configs/stage1_tiny.yaml train.output_dir=runs/demo_stage1 train.resume=null $(ARGS)
	@echo "demo done: runs/demo_stage1/summary.json, TensorBoard logs in runs/demo_stage1/tensorboard"

clean:
	rm -rf runs $(TINY) $(TOY)
