# mss-tf: `make demo` trains the U-Net on the built-in demo set and evaluates it; `make test` runs the tests;
# `make lint` runs pyflakes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_RUN ?= runs/unet-demo
DEMO_EVALS := runs/demo-oracle-irm2 runs/demo-mixture
DEMO_REPORT ?= runs/demo-report
# A separate venv with PyTorch, used only by `make bench` to time the PyTorch BSRNN reference.
TORCH_VENV ?= .venv-torch
TORCH_REQ ?= torch==2.13.0+cpu numpy

.PHONY: setup ffmpeg torch-reference convert-deps browser-deps demo report study study-se test test-slow test-browser lint bench bench-roformer bench-quick bench-export bench-finetune clean

setup: $(STAMP) ffmpeg

# the pinned set first, then this project in editable mode without its dependencies (pyproject.toml's
# ranges are already met by the pins, which stay exactly those of requirements.txt): the package
# mss_tf and the console scripts (mss-train, mss-separate, ...) in .venv/bin. The installer is uv
# (from the registry, into the venv) when it can be had: the same packages as pip installs from the
# same pins, faster; pip when uv cannot be installed. Both compile the bytecode at install time (uv
# only when asked): where PYTHONDONTWRITEBYTECODE is set, nothing would cache it later, and every
# process of the tests would compile TensorFlow's modules again (9 s an import instead of 4).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(PY) -m pip install --quiet uv 2>/dev/null && $(VENV)/bin/uv --version >/dev/null 2>&1; then \
		$(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode -r requirements.txt && \
		$(VENV)/bin/uv pip install --python $(PY) --quiet --no-deps -e . ; \
	else \
		$(PY) -m pip install --quiet --upgrade pip && \
		$(PY) -m pip install --quiet -r requirements.txt && \
		$(PY) -m pip install --quiet --no-deps -e . ; \
	fi
	touch $(STAMP)

# ffmpeg decodes MUSDB18 .stem.mp4 files; MUSDB18-HQ and the demo set do not need it.
ffmpeg:
	@if command -v ffmpeg >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing ffmpeg with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
		|| echo "warning: apt-get could not install ffmpeg; .stem.mp4 reading will be unavailable"; \
	else \
		echo "warning: ffmpeg not found; install it (apt-get install ffmpeg / brew install ffmpeg) to read MUSDB18 .stem.mp4"; \
	fi

# the PyTorch reference is optional: without it the benchmark compares against the issue's figure
torch-reference:
	@test -x $(TORCH_VENV)/bin/python || ($(PYTHON) -m venv $(TORCH_VENV) && \
		$(TORCH_VENV)/bin/python -m pip install --quiet $(TORCH_REQ)) || \
		(rm -rf $(TORCH_VENV); echo "warning: could not install $(TORCH_REQ); no PyTorch reference")

# torch for `python -m mss_tf.convert` to read PyTorch checkpoints: into .venv, only when asked
# (never by setup or test: nothing else imports torch); or `--torch-python .venv-torch/bin/python`
convert-deps: setup
	$(PY) -m pip install --quiet -r requirements-convert.txt

# playwright into .venv and a Chromium for the browser tests (make test-browser): only when asked, never by
# setup or test. Chromium from the system's package manager when run as root with apt-get; otherwise install
# one yourself (README "Listen") or point MSS_CHROMIUM at one.
browser-deps: setup
	$(PY) -m pip install --quiet -r requirements-browser.txt
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || [ -n "$$MSS_CHROMIUM" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: apt-get could not install chromium; the browser tests will be skipped"; \
	else \
		echo "warning: no Chromium found; install one (apt-get install chromium, or $(PY) -m playwright install chromium) or set MSS_CHROMIUM"; \
	fi

demo: setup
	rm -rf $(DEMO_RUN) $(DEMO_EVALS) $(DEMO_REPORT)
	$(PY) train.py --model unet --run-dir $(DEMO_RUN) --epochs 20 --steps-per-epoch 100
	$(PY) evaluate.py --run $(DEMO_RUN) --workers 2
	$(PY) evaluate.py --run $(DEMO_RUN) --wiener 1 --workers 2 --quiet
	$(PY) evaluate.py --oracle irm2 --preset unet --out runs/demo-oracle-irm2 --workers 2 --quiet
	$(PY) evaluate.py --mixture --out runs/demo-mixture --workers 2 --quiet
	$(PY) evaluate.py --compare $(DEMO_RUN) $(DEMO_RUN)/eval-wiener-1 runs/demo-oracle-irm2 runs/demo-mixture --out $(DEMO_REPORT)
	@echo "listen: open $(DEMO_REPORT)/index.html in a browser"

# one table and the plots for every evaluated folder under runs/ (those holding results.json)
report: setup
	$(PY) evaluate.py --compare $$(ls -d runs/*/ runs/*/eval-*/ 2>/dev/null | while read d; do test -f $$d/results.json && echo $$d; done) --out runs/report

# two pytest workers (pytest-xdist), one test file each at a time: the many CLI tests spend
# much of their time starting Python and TensorFlow on one core
TEST_WORKERS ?= 2
# TensorFlow's intra-op pool of each worker and of the CLIs it starts: the cores shared out among
# the workers, so that two workers do not each spin a pool over every core (10:50 -> 10:07 on 2 cores)
TEST_THREADS ?= $(shell $(PYTHON) -c 'import os; print(max(1, (os.cpu_count() or 2) // $(TEST_WORKERS)))')
# the study (python -m mss_tf.study --help): NMF, U-Net, BSRNN(-SE), BS- and Mel-RoFormer under one budget, on the
# demo set unless MUSDB_PATH is set; writes study/REPORT.md and the README's Results block
STUDY_ARGS ?=
study: setup
	$(PY) -m mss_tf.study --out study --readme README.md $(STUDY_ARGS)

# issue 26: does SE help BSRNN? BSRNN-small, BSRNN-SE-small and its ablation, 3 paired seeds of 1000 steps each
# (a few hours on 2 cores); writes study/SE.md and the README's SE block
study-se: setup
	$(PY) -m mss_tf.study --question se --out study --readme README.md $(STUDY_ARGS)

test: setup
	TF_NUM_INTRAOP_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

# the listening report and the separation page in a real Chromium (tests/test_browser.py; skipped, with the
# reason, when playwright or a Chromium is missing)
test-browser: browser-deps
	$(PY) -m pytest -q -m browser -rs tests/test_browser.py

# pyflakes from the dev extra (installed into .venv the first time)
LINT_PATHS ?= mss_tf tests benchmarks datasets examples train.py evaluate.py separate.py
lint: setup
	$(PY) -m pyflakes --version >/dev/null 2>&1 || $(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pyflakes $(LINT_PATHS)

TORCH_ARG = $(if $(wildcard $(TORCH_VENV)/bin/python),--torch-python $(TORCH_VENV)/bin/python,)
# A work tree of amanteur/BandSplitRNN-PyTorch, the PyTorch peer the training step is timed against
# (optional: make bench PEER_REPO=/path/to/BandSplitRNN-PyTorch).
PEER_REPO ?=
PEER_ARG = $(if $(and $(PEER_REPO),$(wildcard $(TORCH_VENV)/bin/python)),--torch-python $(TORCH_VENV)/bin/python --peer-repo $(PEER_REPO),)

bench: setup torch-reference
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/models.py $(TORCH_ARG) $(if $(PEER_REPO),--peer-repo $(PEER_REPO),)
	$(PY) benchmarks/training.py $(PEER_ARG)
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/evaluation.py

# the paper-size BS-RoFormer against the PyTorch code it was ported from (a work tree or extracted
# copy of ZFTurbo/Music-Source-Separation-Training: REFERENCE_REPO=DIR); the torch venv gets the
# reference's imports; ROFORMER_ARGS e.g. "--threads 1 --train-seconds 3"
ROFORMER_ARGS ?=
REFERENCE_REQ ?= einops==0.8.2 beartype==0.23.1 rotary-embedding-torch==0.9.1 PyYAML==6.0.4
bench-roformer: setup torch-reference
	@test -n "$(REFERENCE_REPO)" || (echo "error: set REFERENCE_REPO to a copy of ZFTurbo/Music-Source-Separation-Training" >&2; exit 2)
	$(TORCH_VENV)/bin/python -m pip install --quiet $(REFERENCE_REQ)
	$(PY) benchmarks/roformer.py --torch-python $(TORCH_VENV)/bin/python --reference-repo $(REFERENCE_REPO) $(ROFORMER_ARGS)

# the exports side by side (SavedModel, LiteRT float32/float16/int8, ONNX): a U-Net trained for 300 steps
# on the demo set, then size, load time, speed and uSDR per format (RESULTS.md "Exports")
EXPORT_RUN ?= runs/unet-export-bench
bench-export: setup
	rm -rf $(EXPORT_RUN)
	$(PY) train.py --model unet --run-dir $(EXPORT_RUN) --epochs 3 --steps-per-epoch 100 --quiet
	$(PY) benchmarks/export.py --run $(EXPORT_RUN)

# issue 23: a six-target U-Net on the demo songs' parts (generic stems layout), from scratch and fine-tuned from
# a four-target demo U-Net: steps to the same validation uSDR, museval per target, an export through separate.py
# (about 40 min on 2 cores; RESULTS.md "Fine-tuning and six targets")
bench-finetune: setup
	$(PY) benchmarks/finetune.py

bench-quick: setup torch-reference
	$(PY) benchmarks/data_pipeline.py --quick
	$(PY) benchmarks/models.py --quick $(TORCH_ARG)
	$(PY) benchmarks/training.py --quick
	$(PY) benchmarks/inference.py --quick

clean:
	rm -rf $(VENV) $(TORCH_VENV) data runs
