#!/usr/bin/env bash
# Headline comparisons on one GPU in < 8 minutes, printing the same ratio tables as the CPU runs:
#   1. capture every resid_post + steered generate (SmolLM2-135M, 4 x 128; raw hooks, HF hidden states, nnsight if present)
#   2. SAE training vs sparsify: wall time to a held-out FVU (d 576, 16,384 latents, k 32, batch 4096, fresh rows)
#   3. harvest throughput vs a plain forward
# Without a GPU (or with --short) it runs every script's CPU short mode, so the script itself stays tested.
#
#   bash bench/gpu.sh            # cuda if available, else the CPU short mode
#   bash bench/gpu.sh --short    # CPU short mode
#   PY=/path/python PEERS_PY=/tmp/peers/bin/python bash bench/gpu.sh   # interpreters (PEERS_PY: has sparsify)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEERS_PY=${PEERS_PY:-/tmp/peers/bin/python}
[ -x "$PEERS_PY" ] || PEERS_PY=$PY
export HF_HUB_OFFLINE=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
DEV=cpu
if [ "${1:-}" != "--short" ] && $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then DEV=cuda; fi
echo "== device $DEV; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u)"
t0=$(date +%s)
if [ "$DEV" = cuda ]; then
  $PY -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__)"
  echo "== 1. capture overhead + steered generate"
  timeout 150 $PY bench/capture_overhead.py --device cuda --threads 4 --repeats 7 --calls 5
  echo "== 2. SAE training vs sparsify (wall time to held-out FVU)"
  timeout 240 $PEERS_PY bench/sae_quality.py --device cuda --d-in 576 --latents 16384 --k 32 --batch 4096 \
      --steps 300 --eval-every 25 --threads 4 2>&1 | grep -v "Training:"
  echo "== 3. harvest throughput"
  timeout 60 $PY bench/harvest_throughput.py --device cuda --contexts 64 --batch-size 32 --repeats 3 --threads 4
else
  echo "== 1. capture overhead (short: tiny-gpt2 1x16)"
  timeout 300 $PY bench/capture_overhead.py --short
  echo "== 2. SAE training vs sparsify (short)"
  timeout 300 $PEERS_PY bench/sae_quality.py --short 2>&1 | grep -v "Training:"
  echo "== 3. harvest throughput (short)"
  timeout 600 $PY bench/harvest_throughput.py --contexts 2 --batch-size 2 --repeats 1 --threads 1
fi
echo "== done in $(( $(date +%s) - t0 )) s; load $(cut -d' ' -f1-3 /proc/loadavg)"
