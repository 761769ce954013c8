#!/usr/bin/env bash
# Demo of the dictionary family on a real model (CPU): harvest SmolLM2 blocks.15.resid_post from the bundled demo
# corpus (>= 200k tokens), train a TopK SAE on it, evaluate (FVU, L0, dead, density PNG, spliced CE) and list
# top-activating contexts of a few features. Target: training < 20 min on a quiet CPU, FVU < 0.2 at L0 <= 64.
#   bash bench/sae_demo.sh [WORKDIR]
set -euo pipefail
W=${1:-/tmp/actlab-sae-demo}
PY=${PY:-python}
mkdir -p "$W"
export HF_HUB_OFFLINE=1
$PY -m actlab harvest smollm2-135m-instruct --data demo --sites blocks.15.resid_post --tokens 250000 \
    --out "$W/store" --dtype bf16 --exclude-bos --context-length 128 --batch-size 16
start=$(date +%s)
$PY -m actlab sae train --store "$W/store" --site blocks.15.resid_post --arch topk --k 32 --expansion 8 \
    --tokens 1500000 --batch-size 4096 --threads 2 --checkpoint-every 100 --out "$W/sae"
echo "training wall time: $(( $(date +%s) - start )) s"
$PY -m actlab sae eval "$W/sae" --store "$W/store" --tokens 50000 --png "$W/density.png"
$PY -m actlab sae info "$W/sae"
$PY -m actlab sae top "$W/sae" --store "$W/store" --n-features 8 --top 4 --window 10
