# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first, pinned, so pip takes the CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[offline,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-mmsa demo

test: $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples
	$(BIN)/ruff format --check stream_mmsa tests examples
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples

format: $(STAMP)
	$(BIN)/ruff format stream_mmsa tests examples
	$(BIN)/ruff check --fix stream_mmsa tests examples

clean:
	rm -rf $(VENV) build *.egg-info
