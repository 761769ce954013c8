"""Bad input gets clear errors and never damages what is complete."""
import errno
import json

import pytest
import torch

import actlab.store.writer as writer_mod
from actlab.cli import main
from actlab.store import ActivationStore, HarvestConfig, StoreCorruptError, StoreError, harvest


def cfg(data, out, **kw):
    base = dict(data=str(data), sites=["blocks.0.resid_post"], out=str(out), tokens=2000, store_dtype="fp32",
                context_length=32, batch_size=4, shard_rows=300, progress=False)
    base.update(kw)
    return HarvestConfig(**base)


def test_missing_data_file(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        harvest(tiny("tiny-llama"), cfg(tmp_path / "nope.jsonl", tmp_path / "o"))
    with pytest.raises(SystemExit, match="does not exist"):
        main(["harvest", "tiny-llama", "--data", str(tmp_path / "nope.txt"), "--sites", "embed", "--out",
              str(tmp_path / "o")])


def test_empty_dataset(tiny, tmp_path):
    (tmp_path / "e.txt").write_text("\n   \n\n")
    with pytest.raises(ValueError, match="empty"):
        harvest(tiny("tiny-llama"), cfg(tmp_path / "e.txt", tmp_path / "o"))
    (tmp_path / "short.txt").write_text("hi")
    with pytest.raises(ValueError, match="yields no rows"):
        harvest(tiny("tiny-llama"), cfg(tmp_path / "short.txt", tmp_path / "o2"))


def test_unknown_site(tiny, corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown site.*blocks.9.resid_post"):
        harvest(tiny("tiny-llama"), cfg(corpus, tmp_path / "o", sites=["blocks.9.resid_post"]))
    assert not (tmp_path / "o").exists()


def test_bad_config_values(corpus, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        cfg(corpus, tmp_path, store_dtype="int8")
    with pytest.raises(ValueError, match="positions"):
        cfg(corpus, tmp_path, positions="x:y")
    with pytest.raises(ValueError, match="sites is empty"):
        cfg(corpus, tmp_path, sites=[])
    with pytest.raises(ValueError, match="tokens"):
        cfg(corpus, tmp_path, tokens=0)


def test_folder_of_another_harvest_is_refused(tiny, corpus, tmp_path):
    m = tiny("tiny-llama")
    st = harvest(m, cfg(corpus, tmp_path / "o"))
    before = (tmp_path / "o" / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match=r"belongs to another harvest.*tokens: folder has 2000, now 3000"):
        harvest(m, cfg(corpus, tmp_path / "o", tokens=3000))
    with pytest.raises(StoreError, match=r"belongs to another harvest.*sites"):
        harvest(m, cfg(corpus, tmp_path / "o", sites=["blocks.1.resid_post"]))
    assert (tmp_path / "o" / "manifest.json").read_bytes() == before and st.verify() == []
    # the same command on a complete store is a no-op that returns it
    again = harvest(m, cfg(corpus, tmp_path / "o"))
    assert len(again) == 2000 and torch.equal(again.read("blocks.0.resid_post", slice(None)),
                                              st.read("blocks.0.resid_post", slice(None)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and holds no manifest.json"):
        harvest(m, cfg(corpus, tmp_path / "other"))


def test_disk_full_keeps_complete_shards_and_resumes(tiny, corpus, tmp_path, monkeypatch):
    m = tiny("tiny-llama")
    real = writer_mod._save
    calls = {"n": 0}

    def full_after_two(tensors, path):
        calls["n"] += 1
        if calls["n"] > 2:
            with open(path, "wb") as f:  # a partial write, then the disk is full
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(writer_mod, "_save", full_after_two)
    out = tmp_path / "o"
    with pytest.raises(StoreError, match=r"writing shard shard-r000-000002.safetensors .* No space left on device"):
        harvest(m, cfg(corpus, out))
    st = ActivationStore(out)
    assert len(st.shards) == 2 and len(st) == 600 and not st.complete and st.verify() == []
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(writer_mod, "_save", real)  # space freed: same command resumes
    st = harvest(m, cfg(corpus, out))
    ref = harvest(m, cfg(corpus, tmp_path / "ref"))
    assert st.complete and len(st) == 2000 and st.verify() == []
    assert torch.equal(st.read("blocks.0.resid_post", slice(None)), ref.read("blocks.0.resid_post", slice(None)))


def test_corrupted_shard_detected_on_verify_and_read(tiny, corpus, tmp_path, capsys):
    out = tmp_path / "o"
    harvest(tiny("tiny-llama"), cfg(corpus, out))
    st = ActivationStore(out)
    victim = st.shards[3]
    t = victim["tensors"]["blocks.0.resid_post"]
    with open(out / victim["file"], "r+b") as f:
        f.seek(t["offsets"][0] + 1000)
        b = f.read(1)
        f.seek(t["offsets"][0] + 1000)
        f.write(bytes([b[0] ^ 0xFF]))
    problems = ActivationStore(out).verify()
    assert len(problems) == 1 and victim["file"] in problems[0] and "checksum" in problems[0]
    with pytest.raises(SystemExit, match="1 problem"):
        main(["store", "info", str(out), "--verify"])
    assert f"PROBLEM: shard {victim['file']}" in capsys.readouterr().out
    fresh = ActivationStore(out)
    fresh.read("blocks.0.resid_post", slice(0, 300))  # an intact shard reads fine
    with pytest.raises(StoreCorruptError, match=victim["file"]):
        fresh.read("blocks.0.resid_post", [950])
    with pytest.raises(StoreCorruptError, match=victim["file"]):
        list(fresh.batches("blocks.0.resid_post", batch_size=256))
    for rows in (700, 200):  # windows of whole shards (crc of the bytes read) and of split shards (checked apart)
        with pytest.raises(StoreCorruptError, match=victim["file"]):
            list(ActivationStore(out).batches("blocks.0.resid_post", batch_size=100, buffer_rows=rows))
    # truncation is caught too, naming the file
    p = out / st.shards[1]["file"]
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(StoreCorruptError, match=st.shards[1]["file"]):
        ActivationStore(out).read("blocks.0.resid_post", [400])
    assert any(st.shards[1]["file"] in x for x in ActivationStore(out).verify())


def test_manifest_json_is_valid_and_documented_fields(tiny, corpus, tmp_path):
    harvest(tiny("tiny-llama"), cfg(corpus, tmp_path / "o"))
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    for k in ("format", "format_version", "model", "tokenizer", "sites", "dims", "dtype", "context_length",
              "total_rows", "shards", "harvest"):
        assert k in m
    assert m["total_rows"] == sum(s["rows"] for s in m["shards"]) == 2000
    assert all(s["rows"] == 300 for s in m["shards"][:-1]) and m["shards"][-1]["rows"] == 200
