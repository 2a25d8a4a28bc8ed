#!/usr/bin/env bash
# The CUDA path, checked and measured on a machine with a GPU, in one sitting:
#   1. the engine and training tests (tests/engine/ runs the torch backend on cuda beside
#      cpu; tests/gpu/ captures and replays CUDA graphs; training tests use train.device
#      "auto", which picks cuda there), and the model and checkpoint tests (a run written on
#      cuda loads on cpu);
#   2. `listcopy bench --device cuda`: the seed's loop on the GPU (batches moved per step, as the
#      notebook does) against the ensemble engine at E = 1 .. SIZES, with peak GPU memory.
#
# Usage: bash benchmarks/device_check.sh [OUT_DIR]   (default: ./device-check)
#        STEPS=1000 SIZES=64,1024,8192,32768 DEVICE=cuda (the defaults) set the bench.
# Needs python3 with torch (CUDA build) and pytest. Packages missing there can come as wheels in
# .whl/ (installed with --no-deps into /tmp/site); listcopy itself runs from src/.
set -uo pipefail
out=${1:-device-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, listcopy.training as t; print('torch', torch.__version__, '| auto ->', t.resolve_device('auto'))" || exit 1

status=0
python3 -m pytest -q -p no:cacheprovider --durations=8 --junitxml="$out/junit.xml" \
    tests/engine/ tests/gpu/ tests/test_train.py tests/test_model.py tests/test_checkpoint.py \
    2>&1 | tee "$out/pytest.txt" || status=1
echo "test cases with cuda in their name: $(grep -o '<testcase [^>]*cuda' "$out/junit.xml" | wc -l)"

python3 -m listcopy.cli bench --device "${DEVICE:-cuda}" --threads 1 --steps "${STEPS:-1000}" \
    --sizes "${SIZES:-64,1024,8192,32768}" --json > "$out/bench_cuda.json" || status=1
python3 -c "import json, sys; from listcopy.bench import format_table; print(format_table(json.load(open(sys.argv[1]))))" \
    "$out/bench_cuda.json" | tee "$out/bench_cuda.txt"
exit $status
