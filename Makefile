# Set-up and entry points. `make demo` and `make test` each install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,ray,trainers]" torch==2.13.0
	# litdata requires torchvision, never imports it; PyPI's build fails to import with CPU torch, and
	# libraries that find it installed import it
	$(BIN)/pip uninstall -q -y torchvision
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m regmix.pipeline

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
