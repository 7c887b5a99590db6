# Two commands on a fresh machine:
#   make demo   sets up .venv and runs the main job (fcnseg demo) on the built-in synthetic set
#   make test   sets up .venv with the test extras and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheels this project is developed against (pip takes them from the machine's local wheels).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: demo test install install-dev benchmark clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PY) -m pip install -q -e ".[test,export,serve,runtimes,int8]"
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(VENV)/bin/fcnseg demo --out $(DEMO_OUT)

test: $(VENV)/.dev
	$(PY) -m pytest -q -ra

benchmark: $(VENV)/.dev
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
