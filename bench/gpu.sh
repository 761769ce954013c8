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
#   SHAPE_MODEL=DIR bash bench/gpu.sh   # where the GGUF can't travel: SmolLM2's shapes, random weights (timings only)
# A failing section is reported and the next one still runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PEERS_PY=${PEERS_PY:-/tmp/peers/bin/python}
[ -x "$PEERS_PY" ] || PEERS_PY=$PY
export TQDM_DISABLE=1 HF_HUB_OFFLINE=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
DEV=cpu
if [ "${1:-}" != "--short" ] && $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then DEV=cuda; fi
echo "== device $DEV; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u)"
t0=$(date +%s)
failed=""
section() { local name=$1; shift; "$@" || { echo "!! section '$name' failed (exit $?)"; failed="$failed $name"; }; }
if [ -n "${SHAPE_MODEL:-}" ]; then $PY bench/gpu_shape_model.py --from "$SHAPE_MODEL" || exit 1; fi
if [ "$DEV" = cuda ]; then
  $PY -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__)"
  echo "== 1. capture overhead + steered generate"
  section capture timeout 120 $PY bench/capture_overhead.py --device cuda --threads 4 --repeats 5 --calls 5
  echo "== 2. SAE training vs sparsify (wall time to held-out FVU)"
  section sae timeout 240 $PEERS_PY bench/sae_quality.py --device cuda --d-in 576 --latents 16384 --k 32 --batch 4096 \
      --steps 2000 --eval-every 100 --threads 4 --only actlab,sparsify,sparsify_adam --lrs 2e-4,1.2e-3,2.4e-3
  echo "== 3. harvest throughput"
  # 2,048 contexts (262k tokens) per run: the 64-context run of 2026-11-30 measured mostly the harvest's fixed start
  # (corpus read and tokenized, folder, fsync, manifest) against an 80 ms forward
  section harvest timeout 120 $PY bench/harvest_throughput.py --device cuda --contexts 2048 --batch-size 64 --repeats 3 --threads 4
else
  echo "== 1. capture overhead (short: tiny-gpt2 1x16)"
  section capture timeout 300 $PY bench/capture_overhead.py --short
  echo "== 2. SAE training vs sparsify (short)"
  section sae timeout 300 $PEERS_PY bench/sae_quality.py --short
  echo "== 3. harvest throughput (short)"
  section harvest timeout 600 $PY bench/harvest_throughput.py --contexts 2 --batch-size 2 --repeats 1 --threads 1
fi
echo "== done in $(( $(date +%s) - t0 )) s; load $(cut -d' ' -f1-3 /proc/loadavg); failed:${failed:- none}"
[ -z "$failed" ]
