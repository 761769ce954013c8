"""The ``actlab`` command: core verbs here, one subcommand group per method family (``actlab.<family>.cli``).

A family adds its verbs by defining ``register(subparsers)`` in ``actlab/<family>/cli.py``; the parser is
assembled lazily so ``actlab --help`` stays fast. Also runnable as ``python -m actlab`` (so torchrun works).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

FAMILIES = ("store", "stats", "dictionary", "steer", "patch", "attribute", "explain", "security", "viz", "web")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundled name (smollm2-135m-instruct, minilm-l6, tiny-*), HF folder or .gguf")
    p.add_argument("--dtype", default="fp32", help="model dtype: fp32, bf16, fp16 (default fp32)")
    p.add_argument("--device", default=None, help="torch device (default cpu)")


def cmd_sites(a) -> None:
    from actlab import load_model

    m = load_model(a.model, dtype=a.dtype, device=a.device)
    print(m)
    for s in m.sites:
        print(s)
    if a.modules:
        for p in m.module_paths():
            print(f"module:{p}")


def cmd_record(a) -> None:
    from pathlib import Path

    from safetensors.torch import save_file

    from actlab import load_model
    from actlab.utils import parse_dtype

    m = load_model(a.model, dtype=a.dtype, device=a.device)
    texts = list(a.text or [])
    if a.file:
        p = Path(a.file)
        if not p.exists():
            raise SystemExit(f"error: --file {p} does not exist")
        texts += [line for line in p.read_text().splitlines() if line.strip()]
    if not texts:
        raise SystemExit("error: give --text or --file")
    sites = [s for arg in a.site for s in arg.split(",") if s]
    acts = m.record(texts, sites=sites, positions=a.positions if a.positions in ("all", "last") else int(a.positions),
                    dtype=parse_dtype(a.save_dtype))
    enc = m.tokenize(texts)
    tensors = {k: v.contiguous() for k, v in acts.items()}
    tensors["input_ids"] = enc["input_ids"]
    tensors["attention_mask"] = enc["attention_mask"]
    save_file(tensors, a.out, metadata={"model": m.name, "revision": m.revision, "positions": a.positions})
    for k, v in acts.items():
        print(f"{k}: {list(v.shape)} {v.dtype}")
    print(f"wrote {a.out}")


def cmd_generate(a) -> None:
    from actlab import load_interventions, load_model

    m = load_model(a.model, dtype=a.dtype, device=a.device)
    ivs = load_interventions(a.intervention) if a.intervention else []
    prompts = a.prompt
    with m.intervene(ivs):
        outs = m.generate(prompts, max_new_tokens=a.max_new_tokens, chat=a.chat)
    for p, o in zip(prompts, outs):
        print(f"### {p}\n{o}\n")


def cmd_demo(a) -> None:
    from actlab.demo import run_demo

    run_demo(model_name=a.model, max_new_tokens=a.max_new_tokens)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="actlab", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sites", help="list a model's canonical site names")
    _add_model(p)
    p.add_argument("--modules", action="store_true", help="also list raw module:<path> sites")
    p.set_defaults(func=cmd_sites)

    p = sub.add_parser("record", help="record activations of texts at sites into a safetensors file")
    _add_model(p)
    p.add_argument("--text", action="append", help="a text (repeatable)")
    p.add_argument("--file", help="a text file, one input per line")
    p.add_argument("--site", action="append", required=True, help="site name(s), comma separated or repeated")
    p.add_argument("--positions", default="all", help="all, last, or an integer position")
    p.add_argument("--save-dtype", default=None, help="store as fp32/bf16/fp16 (default: model dtype)")
    p.add_argument("--out", default="acts.safetensors", help="output file")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("generate", help="generate text, optionally with a saved intervention file")
    _add_model(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--intervention", help="interventions JSON written by save_interventions / steer extract")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--chat", action="store_true", help="apply the model's chat template")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="the main job: sites, records, residual norms, a steering vector on SmolLM2")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.set_defaults(func=cmd_demo)

    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"actlab.{fam}.cli")
        except ModuleNotFoundError as e:
            if e.name in (f"actlab.{fam}", f"actlab.{fam}.cli"):
                continue
            raise
        mod.register(sub)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(a, "func", None):
        ap.print_help()
        sys.exit(0)
    a.func(a)


if __name__ == "__main__":
    main()
