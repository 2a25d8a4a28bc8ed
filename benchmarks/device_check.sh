#!/usr/bin/env bash
# The CUDA path, checked and measured on a machine with a GPU, in one short sitting. Each part
# has its own time limit (seconds: T_TESTS, T_BENCH, T_TRAIN, T_WIDTHS, T_PROFILE); a failed part
# does not stop the next:
#   1. the CUDA tests: tests/gpu/ (graphs captured and replayed against eager CPU steps), every
#      test of tests/engine/ run on cuda (the torch backend held to the hooked model's logits and
#      gradients there, ...) and the device choice's tests, on 8 workers;
#   2. `listcopy bench --device cuda`: the seed's loop on the GPU (batches moved per step, as the
#      notebook does) against the ensemble engine at E = 1 and SIZES, with peak GPU memory;
#   3. `listcopy train` as a newcomer runs it (device "auto": what it picks, and its time) and on the
#      CPU; 16 seeds at once ("auto" against the CPU); one model forced onto cuda for TRAIN_STEPS
#      steps (ms per step of one model there);
#   4. benchmarks/device_widths.py: per width, the GPU's step at E = 1, 64, 1024 against the CPU's
#      model-step (one thread), the crossovers devices.py's table keeps (T_WIDTHS=0 skips it);
#   5. benchmarks/device_profile.py at E = 8192: the step's kernels, eager and graphed ms/step
#      (T_PROFILE=0 skips it).
#
# Usage: bash benchmarks/device_check.sh [OUT_DIR]   (default: ./device-check)
# Needs python3 with torch (CUDA build) and pytest. Packages missing there can come as wheels in
# .whl/ (installed with --no-deps into /tmp/site); listcopy itself runs from src/. On the H200
# image (Python 3.12) TransformerLens and what it imports were missing; fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     transformer-lens==3.9.0 better-abc==0.0.3 datasets==5.2.0 dill==0.4.1 \
#     multiprocess==0.70.19 fancy-einsum==0.0.3 beartype==0.23.1 typeguard==4.6.1
# The whole script took about 5 minutes there (2026-12-04), before the profile part (~20 s).
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
nproc; gcc --version | head -1 || true
python3 -c "import torch, listcopy.training as t; print('torch', torch.__version__, '| auto ->', t.resolve_device('auto'))" || exit 1
python3 -c "import transformer_lens; print('transformer_lens', transformer_lens.__version__ if hasattr(transformer_lens, '__version__') else 'imported')" || true
status=0 dev=${DEVICE:-cuda}
part() { echo "== $1 ($(date +%T))"; }

part "tests"
timeout "${T_TESTS:-120}" python3 -m pytest -q -p no:cacheprovider -n 8 --durations=5 \
    --junitxml="$out/junit.xml" -k "cuda or gpu or graph or device or auto" tests/gpu/ tests/engine/ tests/test_train.py \
    2>&1 | tail -25 | tee "$out/pytest.txt" || status=1
echo "test cases with cuda in their name: $(grep -o '<testcase [^>]*cuda' "$out/junit.xml" | wc -l)"

part "bench"
timeout "${T_BENCH:-150}" python3 -m listcopy.cli bench --device "$dev" --threads 1 \
    --steps "${STEPS:-2000}" --sizes "${SIZES:-64,1024,8192}" --json > "$out/bench_cuda.json" || status=1
python3 -c "import json, sys; from listcopy.bench import format_table; print(format_table(json.load(open(sys.argv[1]))))" \
    "$out/bench_cuda.json" | tee "$out/bench_cuda.txt"

part "train"
TIMEFORMAT="%R s wall"
for how in auto cpu; do
    echo "listcopy train, train.device=$how (the default job, one thread):"
    time timeout "${T_TRAIN:-40}" python3 -m listcopy.cli train --quiet --threads 1 \
        --out "/tmp/train_$how" --set "train.device=$how" 2>&1 | tail -3 || status=1
done
# 16 default models: past the crossover on one thread, "auto" picks the GPU; stopping at 95%
# accuracy, they stop at different steps (the graphs of the members still training)
for how in auto cpu; do
    echo "listcopy train --seeds 0-15, train.device=$how, ${TRAIN_STEPS:-3000} steps, stop at 0.95:"
    time timeout "${T_TRAIN:-40}" python3 -m listcopy.cli train --threads 1 --seeds 0-15 \
        --out "/tmp/train16_$how" --set "train.device=$how" --set "train.max_steps=${TRAIN_STEPS:-3000}" \
        --set train.early_stop_acc=0.95 \
        2>&1 | grep -E "listcopy: device|max_steps|reached|error" | tail -3 || status=1
done
echo "listcopy train, train.device=$dev, ${TRAIN_STEPS:-3000} steps:"
time timeout "${T_TRAIN:-40}" python3 -m listcopy.cli train --quiet --threads 1 --out "/tmp/train_forced_$dev" \
    --set "train.device=$dev" --set "train.max_steps=${TRAIN_STEPS:-3000}" 2>&1 | tail -3 || status=1

part "widths"
if [ "${T_WIDTHS:-110}" -gt 0 ]; then
timeout "${T_WIDTHS:-110}" python3 benchmarks/device_widths.py --device "$dev" \
    > "$out/widths.json" 2> "$out/widths.err" || status=1
grep '^{"d_model"' "$out/widths.json" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    gpu = ' '.join(f\"E={a['members']} {a['ms_per_step']:.3f}\" for a in r['accelerator'])
    print(f\"d_model {r['d_model']}: accelerator ms/step {gpu} | cpu {r['cpu']['ms_per_model_step']:.4f} ms/model-step | crossover {r['crossover_per_thread']}\")"
tail -3 "$out/widths.err"
fi

part "profile"  # where a large ensemble's step goes; eager against graphed ms/step
if [ "${T_PROFILE:-60}" -gt 0 ]; then
timeout "${T_PROFILE:-60}" python3 benchmarks/device_profile.py --device "$dev" --members 8192 \
    --top 15 > "$out/profile.txt" 2>&1 || status=1
grep -E "Self (CPU|CUDA) time total|ms/step" "$out/profile.txt"
fi

part "done"
exit $status
