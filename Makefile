# Two commands on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC picks the torch build: CI pins the local CPU wheel (torch==2.13.0); a GPU machine can keep "torch".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
PY := $(VENV)/bin/python

.PHONY: demo test lint clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[train,eval,dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py --output_dir outputs/demo

test: $(VENV)/.installed
	$(PY) -m ruff check fundus_diffusion pipelines scripts tests benchmarks
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) outputs
