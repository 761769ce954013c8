"""Build SmolLM2-135M's architecture with random weights in actlab's model cache, for timing on a GPU machine
that the 98 MB GGUF cannot reach (its transfer limit is 64 MiB). Timings only: no figure from it is a quality figure.

  python bench/gpu_shape_model.py --from DIR   # DIR: SmolLM2's config.json + tokenizer files, e.g. a copy of
                                               # ~/.cache/actlab/models/smollm2-135m-instruct without model.safetensors
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", required=True, help="folder with config.json and the tokenizer files")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from transformers import AutoConfig, AutoModelForCausalLM

    from actlab.models.load import SMOLLM2
    from actlab.utils import cache_dir
    out = cache_dir() / "models" / SMOLLM2
    if (out / "actlab.json").exists():
        print(f"{out} exists; kept")
        return
    from actlab.artifact import atomic_folder
    src = Path(a.src)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32)
    with atomic_folder(out) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in ("model.safetensors", "actlab.json"):
                shutil.copy(f, tmp / f.name)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "actlab.json").write_text(json.dumps({"source": "random init, SmolLM2-135M shapes (timings only)",
                                                     "revision": "shape-only-seed0"}))
    print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, random weights")


if __name__ == "__main__":
    main()
