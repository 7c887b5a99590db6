# Two commands on a fresh machine:
#   make demo   sets up .venv and runs the main job (fcnseg demo) on the built-in synthetic set
#   make test   sets up .venv with the test extras and runs the test suite
# And for contributors:
#   make lint          ruff (lint and format check) and mypy on fcnseg/ (the `lint` extra)
#   make docs          the documentation site, built strictly into site/ (the `docs` extra)
#   make wheel-check   builds the wheel, installs it in a new venv and runs the demo there (the `release` extra)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheels this project is developed against (pip takes them from the machine's local wheels).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: demo test install install-dev lint docs wheel-check benchmark clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PY) -m pip install -q -e ".[test,export,serve,runtimes,int8]"
	touch $@

# mypy follows fcnseg's imports of the optional extras, so lint runs in the dev environment.
$(VENV)/.lint: $(VENV)/.dev
	$(PY) -m pip install -q -e ".[lint]"
	touch $@

$(VENV)/.docs: $(VENV)/.core
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

$(VENV)/.release: $(VENV)/.core
	$(PY) -m pip install -q -e ".[release]"
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(VENV)/bin/fcnseg demo --out $(DEMO_OUT)

test: $(VENV)/.dev
	$(PY) -m pytest -q -ra

# All three run even when one finds something; the target fails if any did.
lint: $(VENV)/.lint
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy fcnseg"; $(VENV)/bin/mypy fcnseg || status=1; \
	exit $$status

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

wheel-check: $(VENV)/.release
	PYTHON=$(PY) BASE_PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" .ci/wheel-check

benchmark: $(VENV)/.dev
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache site dist build .mypy_cache .ruff_cache
