# Both targets create .venv if it is missing and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
# The torch build this project is tested with (a newer one works too: override on the command line).
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

# gpu-check runs on a bare GPU machine too: the venv's python where there is one, else python3.
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)

.PHONY: install demo test test-slow test-all lint format clean gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/timm-scaling sweep demo --jobs 2 --output runs

# Everything to verify on a GPU, in under 8 minutes (benchmarks/README.md); installs nothing.
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py --device cuda --out gpu-check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The fast tests (a few minutes); test-slow: the end-to-end runs (real training, processes,
# signals); CI runs both (.ci/run).
test: lint
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow $(PYTEST_ARGS)

test-all: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
