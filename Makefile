# Two set-up commands: `make demo` and `make test` (both install first if needed).
# On this project's CI machine Ray must run inside ../shared/bin/loopback-only; see README.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip
VENV_STAMP := .venv/.installed

.PHONY: install test test-fast lint demo bench clean

$(VENV_STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first, as a CPU build, so nothing pulls a multi-GB CUDA torch
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[export,dev,openvino]'
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

test: $(VENV_STAMP)
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q --durations=15 tests $(PYTEST_ARGS)

test-fast: $(VENV_STAMP)
	$(PY) -m pytest -q -m "not slow and not ray" tests

lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy settings embedder index storage engine service export jobs deployments bench testkit scripts

demo: $(VENV_STAMP)
	bash scripts/demo.sh

bench: $(VENV_STAMP)
	$(PY) -m bench.encoder

clean:
	rm -rf artifacts indexes runs build

# The GPU path end to end on one GPU (docs/gpu.md): CUDA placement, probe cosines, the bulk job,
# Serve, the gpu-marked tests, against the issue's goals; JSON into GPU_CHECK_OUT. Without a
# usable CUDA GPU it prints one line and succeeds. Ray runs inside loopback-only where it exists.
GPU_CHECK_OUT ?= build/gpu-check
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
gpu-check: $(VENV_STAMP)
	@if [ -x ../shared/bin/loopback-only ]; then \
	  ../shared/bin/loopback-only $(PY) scripts/gpu_check.py $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS); \
	else \
	  $(PY) scripts/gpu_check.py $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS); \
	fi
