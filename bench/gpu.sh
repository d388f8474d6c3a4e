#!/usr/bin/env bash
# The GPU benchmarks in one go, in well under ten minutes on one CUDA GPU:
#   training throughput (charrnn vs a hand-written nn.LSTM, same settings, same run),
#   time to quality (validation loss after SECONDS, charrnn vs the hand-written loop),
#   sampling speed (one stream and 64 streams),
#   and with several GPUs, data-parallel scaling (1 GPU against all of them at the same global batch).
# usage: bash bench/gpu.sh [CORPUS] [SECONDS]    (from the repository root; prints JSON lines)
set -euo pipefail
corpus=${1:-../shared/data/tinyshakespeare.txt}
seconds=${2:-90}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

$py - <<'PY'
import json, torch
print(json.dumps({"bench": "gpu", "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
PY
# the issue's baseline shape, then a GPU-sized one
$py bench/throughput.py --device cuda --rounds 3 --seconds 3
$py bench/throughput.py --device cuda --rounds 3 --seconds 3 --precision fp32
$py bench/throughput.py --device cuda --rounds 3 --seconds 3 --hidden-size 512 --num-layers 3 --batch-size 128 --seq-len 128
$py bench/throughput.py --device cuda --rounds 3 --seconds 3 --hidden-size 512 --num-layers 3 --batch-size 128 --seq-len 128 --precision fp32
$py bench/sampling.py --rounds 2 --seconds 2
if [ -f "$corpus" ]; then
  $py bench/quality.py "$corpus" --seconds "$seconds" --device cuda \
      --hidden-size 512 --num-layers 3 --batch-size 64 --seq-len 128 --dropout 0.2 --lr 3e-3 --eval-every 100000
else
  echo "{\"bench\": \"quality\", \"skipped\": \"no corpus at $corpus\"}"
fi
gpus=$($py -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ] && [ -f "$corpus" ]; then  # multi-GPU mode: 1 GPU against all of them, same global batch
  $py bench/ddp.py "$corpus" --workers "$gpus" --global-batch $((64 * gpus)) --steps 300 --device cuda
fi
