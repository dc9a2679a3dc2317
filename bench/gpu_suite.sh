#!/usr/bin/env bash
# Every GPU figure of the speed issue in one run, for a machine with one CUDA GPU (e.g. the device tool's H100):
#   bench/gpu_suite.sh [OUT_DIR]
# Uses the python3 on PATH (or $PYTHON); it needs torch, timm, numpy, pillow and pyyaml only (no Ray, MLflow,
# Optuna or pydensecrf). Each bench's output goes to OUT_DIR/<name>.txt (default work/gpu_suite) and to the terminal.
# What runs (the reference VOC recipe: ViT-B/16, 448x448, batch 4, 4 CAM scales, PAR, every loss incl. energy):
#   1. bench_train_step --preset voc --device cuda --compile: s/iter, peak GiB, phase breakdown, eager vs compile
#   2. bench_validation --preset voc --device cuda --images 1449 --batch 1,16: a VOC-val-sized pass, batched vs 1
#   3. bench_losses --device cuda: the vectorised hot spots against the reference's loops on the GPU
#   4. bench_par --device cuda: batched PAR against the per-image loop
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-work/gpu_suite}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
status=0
run() {
    local name=$1
    shift
    echo "=== $name: $*" | tee "$OUT/$name.txt"
    if ! "$PY" "$@" 2>&1 | tee -a "$OUT/$name.txt"; then
        echo "=== $name FAILED" | tee -a "$OUT/$name.txt"
        status=1
    fi
}
"$PY" -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0))' | tee "$OUT/device.txt"
run train_step bench/bench_train_step.py --preset voc --device cuda --compile --iters 20 --warmup 3
run validation bench/bench_validation.py --preset voc --device cuda --images 1449 --batch 1,16
run losses bench/bench_losses.py --device cuda --repeat 20 --energy-batch 4 --energy-loop-grid 24
run par bench/bench_par.py --device cuda
exit $status
