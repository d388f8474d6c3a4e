#!/usr/bin/env bash
# The GPU checks and benchmarks in one go, in well under ten minutes on one CUDA GPU:
#   the CUDA-graph training step against the eager one (tests/test_graphs.py),
#   training throughput (charrnn with and without CUDA graphs vs a hand-written nn.LSTM, same settings, same run),
#   sampling speed (one stream and 64 streams),
#   time to quality (validation loss after SECONDS: the hand-written loop and two charrnn configurations),
#   auto-sizing there (`charrnn train CORPUS --max-time SECONDS --device cuda`, no other flags): what it picks,
#   and with a corpus of thousands of distinct characters (LARGE_VOCAB), the adaptive output layer on the GPU:
#   auto-sized training, `charrnn eval`, and sampling with top-k and top-p,
#   and with several GPUs, data-parallel scaling (1 GPU against all of them at the same global batch).
# usage: bash bench/gpu.sh [CORPUS] [SECONDS] [LARGE_VOCAB]    (from the repository root; prints JSON lines)
set -euo pipefail
corpus=${1:-../shared/data/tinyshakespeare.txt}
seconds=${2:-50}
large_vocab=${3:-}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

$py - <<'PY'
import json, torch
print(json.dumps({"bench": "gpu", "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
PY
$py -m pytest -q -p no:cacheprovider tests/test_graphs.py
for shape in "" "--hidden-size 512 --num-layers 3 --batch-size 128 --seq-len 128"; do
  # shellcheck disable=SC2086
  $py bench/throughput.py --device cuda --rounds 2 --seconds 3 $shape
  # shellcheck disable=SC2086
  CHARRNN_CUDA_GRAPHS=0 $py bench/throughput.py --device cuda --rounds 2 --seconds 3 $shape
done
$py bench/sampling.py --rounds 1 --seconds 2
if [ -f "$corpus" ]; then
  # the hand-written loop, the CPU configuration, and the one tuned on an H100 (50 s)
  $py bench/quality.py "$corpus" --seconds "$seconds" --device cuda --eval-every 100000
  $py bench/quality.py "$corpus" --seconds "$seconds" --device cuda --eval-every 100000 --no-baseline \
      --config configs/shakespeare-gpu.toml
  $py bench/quality.py "$corpus" --seconds "$seconds" --device cuda --no-baseline --no-config  # auto-sized
else
  echo "{\"bench\": \"quality\", \"skipped\": \"no corpus at $corpus\"}"
fi
if [ -n "$large_vocab" ] && [ -f "$large_vocab" ]; then
  run=$(mktemp -d)/run
  $py -m charrnn train "$large_vocab" --max-time "$seconds" --device cuda --out "$run" 2>&1 | grep -E "^(auto-sized|done:)"
  $py -m charrnn eval --checkpoint "$run" --device cuda
  $py -m charrnn generate --checkpoint "$run" --device cuda --length 80 --top-k 20 --seed 1
  $py -m charrnn generate --checkpoint "$run" --device cuda --length 80 --top-p 0.9 --num-samples 4 --seed 1
fi
gpus=$($py -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ] && [ -f "$corpus" ]; then  # multi-GPU mode: 1 GPU against all of them, same global batch
  $py bench/ddp.py "$corpus" --workers "$gpus" --global-batch $((64 * gpus)) --steps 300 --device cuda
fi
