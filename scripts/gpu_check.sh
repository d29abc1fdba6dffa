#!/bin/sh
# The CUDA GPU check in one command: environment, tests, benchmarks (ours and the PyTorch reference),
# one FFHQ-sized training epoch; a JSON summary and a markdown table under $OUT (or --out DIR).
#
#   scripts/gpu_check.sh --prepare          on the development machine, once: fills .gpu_check/ (git-ignored)
#                                           with the wheels and the PyTorch reference from ../shared and the
#                                           built-in photos
#   scripts/gpu_check.sh [--out DIR]        on the GPU machine (carry .gpu_check): under 8 minutes
#   scripts/gpu_check.sh --dry-run          every step on the CPU at tiny sizes (tests/test_gpu_check.py)
#
# A failed step is reported and the next one runs. Details: scripts/tools/gpucheck.py.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
CARRY=${JAXDENOISE_GPU_CHECK_CARRY:-.gpu_check}
case " $* " in
    *" --dry-run "*|*" --prepare "*) ;;
    *)  # the GPU image lacks grain, Wand, ml-collections, dm-pix, tensorboardX: install the carried wheels
        if ! "$PY" -c "import grain, ml_collections, tensorboardX" 2>/dev/null; then
            if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
                SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX") \
                    && "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$CARRY"/wheels/*.whl \
                    && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
            else
                echo "gpu_check: grain/ml_collections/tensorboardX missing and no wheels in $CARRY/wheels (run --prepare)" >&2
            fi
        fi ;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/tools/gpucheck.py "$@"
