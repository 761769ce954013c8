"""Full verification of a store: every listed shard present, sized, with a matching header and crc32 per tensor."""
from __future__ import annotations

import numpy as np

from actlab.store.format import StoreCorruptError, crc_of_array, read_header


def verify_store(store) -> list[str]:
    problems: list[str] = []
    for sh in store.shards:
        f = store.path / sh["file"]
        if not f.exists():
            problems.append(f"shard {sh['file']}: listed in the manifest but missing")
            continue
        size = f.stat().st_size
        if size != sh["bytes"]:
            problems.append(f"shard {sh['file']}: {size} bytes, the manifest says {sh['bytes']}")
            continue
        try:
            header, start = read_header(f)
        except StoreCorruptError as e:
            problems.append(str(e))
            continue
        for key, t in sh["tensors"].items():
            h = header.get(key)
            a, b = t["offsets"]
            if h is None or [start + x for x in h["data_offsets"]] != [a, b] or h["dtype"] != t["dtype"] \
                    or h["shape"] != t["shape"]:
                problems.append(f"shard {sh['file']}: header of tensor {key!r} differs from the manifest")
                continue
            arr = np.memmap(f, dtype=np.uint8, mode="r", offset=a, shape=(b - a,)) if b > a else np.zeros(0, np.uint8)
            if crc_of_array(arr) != t["crc32"]:
                problems.append(f"shard {sh['file']}: checksum mismatch in tensor {key!r}")
            del arr
    total = sum(s["rows"] for s in store.shards)
    if total != store.manifest.get("total_rows", total):
        problems.append(f"manifest total_rows {store.manifest['total_rows']} != sum of shard rows {total}")
    for s in store.sites:
        if s not in store.dims and store.shards:
            problems.append(f"manifest has no dim for site {s!r}")
    return problems
