#!/usr/bin/env bash
# The GPU proof in one device call (bench/gpu_check.py says what it runs and writes).
#   here, once:      ../shared/tools/device-wheels fastapi==0.165.0 && bash bench/gpu_check.sh --prepare
#                    (prints the carry list and the device tool's command)
#   on the device:   bash bench/gpu_check.sh --out $OUT      (within 9 minutes, install included)
#   on a CPU:        bash bench/gpu_check.sh --smoke --out DIR   (tiny sizes, under 3 minutes)
# Where fastai is missing and .whl/ holds the wheels (the device machine), they are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$PY" -c "import fastai" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
exec "$PY" bench/gpu_check.py "$@"
