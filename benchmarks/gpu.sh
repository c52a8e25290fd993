#!/usr/bin/env bash
# The GPU checks of issue 33 as one prepared script for a lent CUDA machine (see /work/.library/device): it must end
# well inside 5 minutes on an H100, so that it can run once more after a fix.
#
#   bash benchmarks/gpu.sh OUT_DIR        # OUT_DIR: where env.txt, pytest.txt, gpu.txt and gpu.json are written
#
# The machine measured before has cupy-cuda13x, torch, transformers and pytest and no network: seq2seq itself is
# installed from this checkout without dependencies; anything else missing must come as wheels in .whl/ (carried).
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import cupy, torch, transformers, numpy; print('cupy', cupy.__version__, 'torch', torch.__version__,
'transformers', transformers.__version__, 'numpy', numpy.__version__); print(cupy.cuda.runtime.runtimeGetVersion())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# the gpu-marked tests: kernels against their references, NCCL at world size 1, parity on the device
timeout 150 python3 -m pytest -q -m gpu -x -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.txt" | tail -15
timeout 240 python3 benchmarks/gpu.py --out "$OUT" 2>&1 | grep -v "Writing model shards" | tee "$OUT/gpu.txt"
