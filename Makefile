# Every target does its own set-up: a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/steplog demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --benchmark-disable

bench: $(STAMP)
	$(BIN)/steplog bench

clean:
	rm -rf $(VENV) demo.steplog
