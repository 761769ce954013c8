"""CLI: ``actlab harvest MODEL --data PATH --sites S1,S2 --tokens N --out DIR`` and ``actlab store info DIR``."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("harvest", help="stream a dataset's activations at sites into a sharded store (resumable)",
                       description="Harvest activations into DIR. Rerun the same command to resume after a crash. "
                                   "Works under `torchrun --nproc-per-node N -m actlab harvest ...`.")
    p.add_argument("model", help="bundled name (smollm2-135m-instruct, tiny-llama, ...), HF folder or .gguf")
    p.add_argument("--data", required=True, help="dataset: .txt, .jsonl, .parquet or local HF dataset folder; "
                                                 "'demo' for the bundled demo corpus")
    p.add_argument("--sites", required=True, help="comma-separated site names")
    p.add_argument("--tokens", type=int, default=None, help="rows to store in total (default: whole dataset)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dtype", default="bf16", help="stored dtype: bf16 (default), fp16, fp32")
    p.add_argument("--model-dtype", default="fp32", help="dtype the model runs in (default fp32)")
    p.add_argument("--device", default=None, help="torch device (default cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--context-length", type=int, default=128, help="tokens per packed context (default 128)")
    p.add_argument("--batch-size", type=int, default=32, help="contexts per forward pass (default 32)")
    p.add_argument("--shard-rows", type=int, default=None, help="rows per shard (default: about 64 MiB per shard)")
    p.add_argument("--exclude-bos", action="store_true", help="drop rows whose token is BOS")
    p.add_argument("--exclude-special", action="store_true", help="drop rows of any special token")
    p.add_argument("--positions", default="all", help="context positions to keep: all, a:b (e.g. 1:), or 0,5,9")
    p.add_argument("--seed", type=int, default=0, help="document order seed (default 0)")
    p.add_argument("--text-field", default="text", help="text field/column in .jsonl/.parquet/datasets")
    p.add_argument("--no-bos", action="store_true", help="do not prefix documents with BOS")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_harvest)

    s = sub.add_parser("store", help="inspect activation stores")
    ss = s.add_subparsers(dest="store_command", metavar="VERB")
    i = ss.add_parser("info", help="print a store's manifest summary; --verify checks every checksum")
    i.add_argument("dir", help="store folder")
    i.add_argument("--verify", action="store_true", help="read every shard and check its checksums")
    i.add_argument("--json", action="store_true", help="print the full manifest as JSON")
    i.set_defaults(func=cmd_info)
    s.set_defaults(func=lambda a: s.print_help())


def cmd_harvest(a: argparse.Namespace) -> None:
    import time

    from actlab import distributed as D
    from actlab import load_model
    from actlab.data import resolve_data
    from actlab.store import HarvestConfig, StoreError, harvest

    D.init_from_env()
    data = a.data
    try:
        cfg = HarvestConfig(data=data, sites=a.sites, out=a.out, tokens=a.tokens, context_length=a.context_length,
                            batch_size=a.batch_size, dtype=a.dtype, shard_rows=a.shard_rows,
                            exclude_bos=a.exclude_bos, exclude_special=a.exclude_special, positions=a.positions,
                            seed=a.seed, text_field=a.text_field, add_bos=not a.no_bos,
                            progress=not a.no_progress)
        resolve_data(data)  # a missing path fails before the model loads
        model = load_model(a.model, dtype=a.model_dtype, device=a.device or D.default_device())
        t0 = time.perf_counter()
        store = harvest(model, cfg)
    except (StoreError, ValueError, FileNotFoundError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    if D.is_main():
        dt = time.perf_counter() - t0
        print(f"{store}\n{len(store)} rows in {dt:.1f} s; complete={store.complete}")
    D.barrier()
    D.destroy()


def cmd_info(a: argparse.Namespace) -> None:
    import json

    from actlab.store import ActivationStore, StoreError

    try:
        st = ActivationStore(a.dir, verify_reads=False)
    except StoreError as e:
        raise SystemExit(f"error: {e}") from None
    m = st.manifest
    if a.json:
        print(json.dumps(m, indent=2))
    else:
        h = m.get("harvest", {})
        print(f"store      {st.path}")
        print(f"format     {m['format']} v{m['format_version']}   complete={st.complete}")
        print(f"model      {m['model']['name']} (revision {m['model'].get('revision') or '-'})")
        print(f"tokenizer  {m['tokenizer'].get('class')} vocab={m['tokenizer'].get('vocab_size')}")
        print(f"data       {h.get('data')} (sha256 {h.get('data_sha256')})")
        print(f"rows       {len(st)} in {len(st.shards)} shard(s) of {m.get('shard_rows')} rows; "
              f"context_length={st.context_length}; dtype={m['dtype']}; world_size={m.get('world_size')}")
        print(f"filters    positions={h.get('positions')} exclude_bos={h.get('exclude_bos')} "
              f"exclude_special={h.get('exclude_special')} seed={h.get('seed')}")
        for s in st.sites:
            print(f"site       {s}  d={st.dims.get(s)}  shape={st.site_shapes.get(s)}")
    if a.verify:
        problems = st.verify()
        for p in problems:
            print(f"PROBLEM: {p}")
        if problems:
            raise SystemExit(f"error: {len(problems)} problem(s) found in {st.path}")
        print(f"verified {len(st.shards)} shard(s): all checksums match")
