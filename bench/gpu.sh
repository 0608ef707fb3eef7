#!/usr/bin/env bash
# Step benchmark on one NVIDIA GPU: LoRA, PiSSA, BA-LoRA and the reference-style BA-LoRA on a
# ~0.9B Llama built from a config (random weights, bf16, no hub, no network), side by side.
# Prints bench/step.py's JSON: tokens/s, the ratios to lora and an MFU estimate per arm
# (6 * params * tokens/s / peak bf16 FLOP/s). Also writes it to $OUT/bench_step_gpu.json
# when OUT is set, else to /tmp.
#
#   bash bench/gpu.sh                       # defaults below
#   SEQ=1024 STEPS=10 bash bench/gpu.sh     # knobs by environment; extra args go to step.py
#
# Needs torch with CUDA, transformers, peft and accelerate (requirements.txt). Nothing is
# fetched: wheels placed in .whl/ are installed from there if present.
set -euo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "bench/gpu.sh: no CUDA device visible to torch")'

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 bench/step.py \
  --model "${MODEL:-synthetic-1b}" \
  --device cuda \
  --dtype bfloat16 \
  --batch "${BATCH:-8}" \
  --seq "${SEQ:-512}" \
  --rank "${RANK:-8}" \
  --steps "${STEPS:-8}" \
  --warmup "${WARMUP:-2}" \
  --peak-tflops "${PEAK_TFLOPS:-989}" \
  --out "${OUT:-/tmp}/bench_step_gpu.json" \
  "$@"
