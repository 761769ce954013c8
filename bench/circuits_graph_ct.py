"""circuit-tracer's side of bench/circuits_graph.py: the same prompt, model and transcoders through circuit-tracer's
``attribute`` (nnsight backend on the HF SmolLM2 folder). Runs in circuit-tracer's own venv (it pins
transformers <= 4.57, actlab's venv has 5.x), so it does not import actlab: it reads the transcoder folders' safetensors
directly and folds actlab's input centring ``b_pre`` into ``b_enc`` (``b_enc - W_enc b_pre``).

    python3 -m venv /tmp/ct && /tmp/ct/bin/pip install -c .venv/torch-pin.txt circuit-tracer
    HF_HUB_OFFLINE=1 /tmp/ct/bin/python bench/circuits_graph_ct.py --hf ~/.cache/actlab/models/smollm2-135m-instruct \
        --transcoders /tmp/circuits_tc --max-feature-nodes 500
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

PROMPT = ("The quick brown fox jumps over the lazy dog near the river bank, and then the tired old dog finally "
          "falls asleep under the warm afternoon sun while the children play in the garden behind the small house")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="the HF folder of SmolLM2 (actlab's converted cache)")
    ap.add_argument("--transcoders", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--max-feature-nodes", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from circuit_tracer import attribute
    from circuit_tracer.replacement_model import ReplacementModel
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tcs = {}
    for f in sorted(Path(a.transcoders).glob("blocks.*.mlp_in")):
        i = int(f.name.split(".")[1])
        cfg = json.loads((f / "cfg.json").read_text())
        w = load_file(str(f / "dictionary.safetensors"))
        d, n = w["W_enc"].shape[1], w["W_enc"].shape[0]
        t = SingleLayerTranscoder(d, n, TopK(int(cfg["k"])), i, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            t.W_enc.copy_(w["W_enc"])
            t.b_enc.copy_(w["b_enc"] - w["W_enc"] @ w["b_pre"])
            t.W_dec.copy_(w["W_dec"])
            t.b_dec.copy_(w["b_dec"])
        tcs[i] = t
    ts = TranscoderSet(tcs, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out")
    rm = ReplacementModel.from_pretrained_and_transcoders(a.hf, ts, backend="nnsight", device=torch.device("cpu"),
                                                          dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.hf)
    ids = torch.tensor(tok(PROMPT)["input_ids"][:a.tokens])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    g = attribute(ids, rm, max_feature_nodes=a.max_feature_nodes, batch_size=a.batch_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"side": "circuit-tracer", "tokens": len(ids), "wall_s": round(wall, 2),
                      "cpu_s": round(cpu, 1),
                      "peak_rss_mib_before": round(rss0),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "active_latents": int(g.active_features.shape[0]),
                      "latent_rows": int(g.selected_features.shape[0]), "threads": a.threads}))


if __name__ == "__main__":
    main()
