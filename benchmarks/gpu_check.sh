#!/usr/bin/env bash
# The GPU-only checks, as one script for a GPU machine, in parts run in the order PARTS names them
# (default "shapes tests", meant to take under 8 minutes on one H100 or H200):
#   shapes   benchmarks/shapes.py --device cuda: t5-60m, t5-220m, gpt2-124m and llama-135m at instruction
#            shapes (sources <= 512 tokens, targets <= 128), bf16: tokens/s, MFU (goal >= 40% for t5-220m
#            and gpt2-124m), peak memory, the ratio to a plain PyTorch loop (goal >= 0.95), packed vs
#            padded for the decoder-only ones, and torch.compile on the plain loop (kept only if it gains)
#   mfu      benchmarks/gpu_mfu.py: a T5-base-size model, bf16, ZeRO-2, 50 steps of ~900-token examples,
#            then LoRA and QLoRA on it: tokens/s, MFU against the 40% goal, peak memory, energy, and a
#            plain PyTorch loop's ratio (arguments of this script go to it)
#   tests    tests/test_gpu.py: bf16, MFU, NVML energy, ZeRO-2, QLoRA (~3 minutes on an H200)
#   options  benchmarks/loop_options.py on the GPU: fused vs foreach AdamW, eager attention vs SDPA
#   compile  benchmarks/compile_check.py on the GPU: torch.compile vs eager
# Needs the package's dependencies in the Python on PATH (or WHEELS=folder of wheels to install into
# /tmp/site first: benchmarks/gpu_wheels.sh downloads those the lent GPU machine lacks into .whl/), a
# CUDA GPU, and bitsandbytes for QLoRA. Logs and gpu_mfu.json go to OUT (default /tmp/gpu_check).
#     bash benchmarks/gpu_check.sh
#     WHEELS=.whl bash benchmarks/gpu_check.sh                        # on the lent machine, carrying .whl
#     WHEELS=.whl PARTS="options compile" bash benchmarks/gpu_check.sh   # the optional parts, a second call
# Exits non-zero if a part fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
PARTS=${PARTS:-shapes tests}
mkdir -p "$OUT"
if [[ -n "${WHEELS:-}" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
failed=0
for part in $PARTS; do
    echo "=== $part ($(date +%T))"
    case $part in
        shapes) python3 benchmarks/shapes.py --device cuda --compile --json "$OUT/shapes.json" 2>&1 \
                    | tee "$OUT/shapes.log" | grep -v "^\[ray-t2t\]\|^\[20" ;;
        tests) python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" ;;
        mfu) python3 benchmarks/gpu_mfu.py --json "$OUT/gpu_mfu.json" "$@" 2>&1 | tee "$OUT/gpu_mfu.log" \
                 | grep -v "^\[ray-t2t\]\|^\[20" ;;
        options) python3 benchmarks/loop_options.py --device cuda --preset t5-220m --batch-size 64 --steps 60 \
                     --variants default,fused_adamw,foreach_adamw,eager_attention 2>&1 | tee "$OUT/loop_options.log" ;;
        compile) python3 benchmarks/compile_check.py --device cuda --preset t5-220m --batch-size 64 --warmup 30 \
                     --steps 60 2>&1 | tee "$OUT/compile_check.log" ;;
        *) echo "unknown part '$part' (shapes, tests, mfu, options, compile)"; false ;;
    esac
    status=${PIPESTATUS[0]}
    if [[ $status -ne 0 ]]; then
        echo "=== $part failed (exit $status)"
        failed=1
    fi
done
echo "=== done ($(date +%T))"
exit $failed
