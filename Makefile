# Every target does its own set-up: a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,frames,torch,sql,plot,mlflow,tensorboard,lightning,transformers]'
	@# Compile the common numba kernels into their on-disk cache, in parallel processes, so
	@# that a first flush, summary or read does not wait for them (they compile on first
	@# use anyway if this step fails).
	$(BIN)/python -c 'from steplog.engine.jit import warm_up; warm_up() or print("warm-up incomplete")'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/steplog demo

# The MLflow UI test drives a real browser: Debian's chromium (apt-get needs root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q --benchmark-disable

bench: $(STAMP)
	$(BIN)/steplog bench

clean:
	rm -rf $(VENV) demo.steplog
