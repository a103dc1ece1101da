# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned so pip takes the local CPU build instead of a multi-GB CUDA one.
TORCH := torch==2.13.0

.PHONY: install test lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/latentae weights fetch
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

lint: install
	$(BIN)/ruff check src tests scripts

demo: install
	$(BIN)/latentae weights fetch
	$(BIN)/latentae demo --out demo

clean:
	rm -rf $(VENV) demo
