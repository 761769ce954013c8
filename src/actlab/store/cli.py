"""CLI: ``actlab harvest MODEL --data PATH --sites S1,S2 --tokens N --out DIR`` and ``actlab store info DIR``.

Flags only: the model group (``--dtype`` = the model's dtype, ``--device``) from ``actlab.clikit``, one flag per
``HarvestConfig`` field (``--store-dtype`` is the storage dtype), and the library calls."""
from __future__ import annotations

import argparse

from actlab import clikit


def register(sub) -> None:
    p = sub.add_parser("harvest", help="stream a dataset's activations at sites into a sharded store (resumable)",
                       description="Harvest activations into --out. Rerun the same command to resume after a crash. "
                                   "Works under `torchrun --nproc-per-node N -m actlab harvest ...`. --dtype is the "
                                   "model's dtype; --store-dtype the stored one. --data demo: the bundled corpus.")
    clikit.add_model_args(p)
    clikit.add_config(p, _harvest_config())
    p.set_defaults(func=cmd_harvest)

    s = sub.add_parser("store", help="inspect activation stores")
    ss = s.add_subparsers(dest="store_command", metavar="VERB")
    i = ss.add_parser("info", help="print a store's manifest summary; --verify checks every checksum")
    i.add_argument("dir", help="store folder")
    i.add_argument("--verify", action="store_true", help="read every shard and check its checksums")
    i.add_argument("--json", action="store_true", help="print the full manifest as JSON")
    i.set_defaults(func=cmd_info)
    s.set_defaults(func=lambda a: s.print_help())


def _harvest_config():
    from actlab.store import HarvestConfig

    return HarvestConfig


def cmd_harvest(a: argparse.Namespace) -> None:
    from actlab import distributed as D
    from actlab import load_model
    from actlab.data import resolve_data
    from actlab.store import harvest

    D.init_from_env()
    cfg = clikit.config_from_args(a)
    resolve_data(cfg.data)  # a missing path fails before the model loads
    model = load_model(a.model, dtype=a.dtype, device=a.device or D.default_device())
    store = harvest(model, cfg)
    if store is not None and D.is_main():
        print(f"{store}\n{len(store)} rows; complete={store.complete}")
    D.barrier()
    D.destroy()


def cmd_info(a: argparse.Namespace) -> None:
    from actlab.store import ActivationStore, StoreError

    st = ActivationStore(a.dir, verify_reads=False)
    print(st.describe(as_json=a.json))
    if a.verify:
        problems = st.verify()
        for p in problems:
            print(f"PROBLEM: {p}")
        if problems:
            raise StoreError(f"{len(problems)} problem(s) found in {st.path}")
        print(f"verified {len(st.shards)} shard(s): all checksums match")
