"""actlab.artifact: atomic durable writes, checked reads (kind, version, truncation, bit flips, NaN), the folder lock,
the umask, a real disk-full filesystem; and every legacy fixture (tests/fixtures/legacy) still loads."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from actlab.artifact import (
    ArtifactError,
    atomic_write_bytes,
    atomic_write_json,
    check_finite,
    folder_lock,
    load_artifact,
    load_tensors,
    read_json,
    save_artifact,
    save_tensors,
    tensor_metadata,
)

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"W": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g).half(),
            "idx": torch.arange(5), "mask": torch.tensor([True, False])}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# -- round trip and checks ------------------------------------------------------------------------------------
def test_round_trip(tmp_path):
    ts = _tensors()
    recs = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    folder = save_artifact(tmp_path / "a", "test.thing", {"alpha": 2, "site": "blocks.0.resid_post"}, ts,
                           records=recs, metadata={"model": "tiny"})
    art = load_artifact(folder, "test.thing")
    assert art.kind == "test.thing" and art.version == 1 and art.records == recs
    assert art.config == {"alpha": 2, "site": "blocks.0.resid_post"}
    assert art.metadata["model"] == "tiny"
    for k, v in ts.items():
        assert art.tensors[k].dtype == v.dtype and torch.equal(art.tensors[k], v), k
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["artifact"]["kind"] == "test.thing" and cfg["artifact"]["format_version"] == 1
    assert cfg["artifact"]["actlab_version"]
    assert _leftovers(folder) == []
    assert load_tensors(folder / "weights.safetensors", names=["b"]).keys() == {"b"}


def test_views_and_shared_storage_are_saved_as_copies(tmp_path):
    base = torch.randn(4, 6)
    ts = {"a": base, "row": base[1], "colT": base.T}  # shared storage and a non-contiguous view
    save_tensors(tmp_path / "t.safetensors", ts)
    back = load_tensors(tmp_path / "t.safetensors")
    for k, v in ts.items():
        assert torch.equal(back[k], v), k


def test_wrong_kind(tmp_path):
    save_artifact(tmp_path / "a", "steer.direction", {}, {"v": torch.ones(3)})
    with pytest.raises(ArtifactError, match=r"cfg.json is a 'steer.direction' artifact; expected 'patch.result'"):
        load_artifact(tmp_path / "a", "patch.result")


def test_newer_format_version(tmp_path):
    save_artifact(tmp_path / "a", "k", {"x": 1}, version=3)
    assert load_artifact(tmp_path / "a", "k", version=3).version == 3
    with pytest.raises(ArtifactError, match=r"format_version 3 .*up to version 2: upgrade actlab"):
        load_artifact(tmp_path / "a", "k", version=2)


def test_missing_things_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_artifact(tmp_path / "nope", "k")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_tensors(tmp_path / "none.safetensors")
    save_artifact(tmp_path / "a", "k", {}, {"v": torch.ones(2)})
    (tmp_path / "a" / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"weights.safetensors does not exist"):
        load_artifact(tmp_path / "a", "k")
    save_tensors(tmp_path / "t.safetensors", {"v": torch.ones(2)})
    with pytest.raises(ArtifactError, match=r"t.safetensors holds no tensor\(s\) \['w'\]; it holds \['v'\]"):
        load_tensors(tmp_path / "t.safetensors", names=["v", "w"])
    (tmp_path / "b").mkdir()
    with pytest.raises(ArtifactError, match=r"no 'artifact' block"):
        (tmp_path / "b" / "cfg.json").write_text("{}")
        load_artifact(tmp_path / "b", "k")


def test_truncated_json(tmp_path):
    save_artifact(tmp_path / "a", "k", {"long": list(range(50))})
    p = tmp_path / "a" / "cfg.json"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ArtifactError, match=r"cfg.json is not valid JSON: .* line \d+ column \d+ .*truncated"):
        load_artifact(tmp_path / "a", "k")
    with pytest.raises(ArtifactError, match=str(p)):
        read_json(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_json(tmp_path / "missing.json", what="manifest")


def test_truncated_safetensors(tmp_path):
    save_artifact(tmp_path / "a", "k", {}, _tensors())
    p = tmp_path / "a" / "weights.safetensors"
    for cut in (4, 60, p.stat().st_size - 3):
        data = p.read_bytes()
        q = tmp_path / f"cut{cut}.safetensors"
        q.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match=rf"cut{cut}.safetensors is not a readable safetensors file"):
            load_tensors(q)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        load_artifact(tmp_path / "a", "k")


def test_bit_flip_in_data_is_caught(tmp_path):
    p = save_tensors(tmp_path / "t.safetensors", {"W": torch.ones(64), "b": torch.zeros(8)})
    data = bytearray(p.read_bytes())
    data[-40] ^= 0x10  # inside W's bytes: still a valid float, only the checksum can tell
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"t.safetensors: tensor 'W' fails its checksum"):
        load_tensors(p)
    assert torch.equal(load_tensors(p, names=["b"])["b"], torch.zeros(8))


def test_bit_flip_in_header_is_caught(tmp_path):
    p = save_tensors(tmp_path / "t.safetensors", {"W": torch.ones(4)})
    data = bytearray(p.read_bytes())
    data[10] ^= 0x40  # '{"W"...' header text
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"t.safetensors"):
        load_tensors(p)


def test_nan_refused_on_save_and_load(tmp_path):
    bad = torch.tensor([1.0, float("nan"), 2.0])
    with pytest.raises(ArtifactError, match=r"refusing to write .*t.safetensors: tensor 'v' contains NaN/Inf"):
        save_tensors(tmp_path / "t.safetensors", {"ok": torch.ones(2), "v": bad})
    assert not (tmp_path / "t.safetensors").exists() and _leftovers(tmp_path) == []
    with pytest.raises(ArtifactError, match="'v' contains NaN/Inf"):
        save_artifact(tmp_path / "a", "k", {}, {"v": torch.tensor([float("inf")])})
    assert not (tmp_path / "a" / "cfg.json").exists()
    save_tensors(tmp_path / "t.safetensors", {"v": bad}, allow_nonfinite=True)
    with pytest.raises(ArtifactError, match=r"t.safetensors: tensor 'v' contains NaN/Inf \(1 of 3"):
        load_tensors(tmp_path / "t.safetensors")
    assert torch.isnan(load_tensors(tmp_path / "t.safetensors", check_finite=False)["v"][1])
    with pytest.raises(ValueError, match="steering vector contains NaN/Inf"):
        check_finite("steering vector", bad)
    check_finite("ints", torch.arange(3))


def test_metadata(tmp_path):
    p = save_tensors(tmp_path / "t.safetensors", {"v": torch.ones(1)}, {"model": "m", "n": 3})
    assert tensor_metadata(p) == {"model": "m", "n": "3"}


# -- durability ----------------------------------------------------------------------------------------------
def test_failed_write_removes_temp_and_keeps_old(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    import actlab.artifact as A

    def boom(src, dst):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(A.os, "replace", boom)
    with pytest.raises(ArtifactError, match=r"could not write .*x.json"):
        atomic_write_json(p, {"v": 2})
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"v": 1} and _leftovers(tmp_path) == []


def test_umask_honoured(tmp_path):
    old = os.umask(0o022)
    try:
        a = atomic_write_bytes(tmp_path / "a.bin", b"x")
        t = save_tensors(tmp_path / "t.safetensors", {"v": torch.ones(1)})
        f = save_artifact(tmp_path / "art", "k", {}, {"v": torch.ones(1)}, records=[{}])
        os.umask(0o027)
        b = atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    for p in (a, t, f / "cfg.json", f / "weights.safetensors", f / "records.jsonl"):
        assert (p.stat().st_mode & 0o777) == 0o644, p
    assert (b.stat().st_mode & 0o777) == 0o640


@pytest.fixture
def tiny_fs(tmpfs):
    """A real 64 KiB tmpfs (the shared ``tmpfs`` fixture); skipped where this process may not mount."""
    return tmpfs("64k")


def test_lock_on_a_full_filesystem_still_locks(tiny_fs):
    """Writing the holder's PID needs a page; on a full disk the lock is still taken (holder shown as unknown)."""
    folder = tiny_fs / "run"
    folder.mkdir()
    fd = os.open(tiny_fs / "filler", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    with folder_lock(folder):
        with pytest.raises(ArtifactError, match="in use by another actlab process"):
            with folder_lock(folder):
                pass


def test_disk_full_on_a_real_filesystem(tiny_fs):
    old = {"v": torch.ones(100)}
    p = save_tensors(tiny_fs / "w.safetensors", old)
    with pytest.raises(ArtifactError, match=r"(?i)no space left on device writing .*w.safetensors"):
        save_tensors(tiny_fs / "w.safetensors", {"v": torch.randn(64 * 1024)})  # 256 KiB into 64 KiB
    assert _leftovers(tiny_fs) == [] and torch.equal(load_tensors(p)["v"], old["v"])
    atomic_write_json(tiny_fs / "cfg.json", {"a": 1})
    with pytest.raises(ArtifactError, match=r"(?i)no space left on device writing .*cfg.json"):
        atomic_write_bytes(tiny_fs / "cfg.json", b"x" * 200_000)
    assert _leftovers(tiny_fs) == [] and read_json(tiny_fs / "cfg.json") == {"a": 1}
    with pytest.raises(ArtifactError, match=r"(?i)no space left"):
        save_artifact(tiny_fs / "art", "k", {"a": 1}, {"v": torch.randn(64 * 1024)})
    assert not (tiny_fs / "art" / "cfg.json").exists() and _leftovers(tiny_fs / "art") == []


# -- lock --------------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("artifact", sys.argv[3])  # the module alone: no torch import
    mod = sys.modules["artifact"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with mod.folder_lock(sys.argv[1], what="test"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_lock_held_by_another_process(tmp_path):
    import actlab.artifact as A

    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "30", A.__file__], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ArtifactError, match=rf"run is in use by another actlab process \(pid {proc.pid}\)"), \
                folder_lock(folder, what="train"):
            pass
    finally:
        proc.kill()
        proc.wait()
    with folder_lock(folder) as lock:  # released when its holder died
        assert lock.read_text().strip() == str(os.getpid())
    with folder_lock(folder), pytest.raises(ArtifactError, match=rf"pid {os.getpid()}"), folder_lock(folder):
        pass  # a second holder in this very process is refused too


# -- legacy fixtures (written by main at 70de782, see tests/fixtures/legacy/README.md) ------------------------
def test_legacy_interventions():
    from actlab import Ablate, Add, Clamp, Patch, Scale, load_interventions

    ivs = load_interventions(LEGACY / "interventions" / "steer.json")
    assert [(s, type(iv)) for s, iv in ivs] == [("blocks.0.resid_post", Add), ("blocks.1.resid_post", Ablate),
                                                  ("blocks.1.mlp_out", Scale), ("blocks.0.attn_out", Clamp),
                                                  ("blocks.0.mlp_out", Patch)]
    add, abl, sc, cl, pa = (iv for _, iv in ivs)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(add.vector, torch.randn(8, generator=g)) and add.alpha == 2.5 and add.positions == slice(1, None)
    assert torch.equal(abl.direction, torch.randn(2, 8, generator=g)) and abl.positions == "last"
    assert torch.equal(sc.factor, torch.rand(8, generator=g) + 0.5) and sc.positions == [0, 2]
    assert cl.index == [1, 3] and cl.value == 0.5
    assert torch.equal(pa.source["blocks.0.mlp_out"], torch.randn(1, 3, 8, generator=g))
    assert torch.equal(pa.positions, torch.tensor([[True, False, True]]))


def test_interventions_round_trip_and_checks(tmp_path):
    from actlab import Add, load_interventions, save_interventions

    p = save_interventions(tmp_path / "iv.json", {"blocks.0.resid_post": Add(torch.ones(4), alpha=3.0)})
    assert torch.equal(load_interventions(p)[0][1].vector, torch.ones(4))
    with pytest.raises(ValueError, match="Add.vector contains NaN/Inf"):  # refused when built ...
        Add(torch.tensor([float("nan")]))
    bad = Add(torch.ones(1))
    bad.vector = torch.tensor([float("nan")])  # ... and when saved, if it turned NaN afterwards
    with pytest.raises(ArtifactError, match=r"tensor '0.vector' contains NaN/Inf"):
        save_interventions(tmp_path / "bad.json", {"blocks.0.resid_post": bad})
    t = tmp_path / "iv.safetensors"
    t.write_bytes(t.read_bytes()[:-2])
    with pytest.raises(ArtifactError, match=r"iv.safetensors"):
        load_interventions(p)
    p.write_text(p.read_text()[:30])
    with pytest.raises(ArtifactError, match=r"iv.json is not valid JSON"):
        load_interventions(p)


def test_legacy_steer_direction():
    from actlab.steer import Direction

    d = Direction.load(LEGACY / "steer_direction")
    assert d.site == "blocks.1.resid_post" and d.model == "tiny-llama" and d.norms == {"vector": 1.5,
                                                                                       "resid_median": 3.0}
    assert d.vector.shape == (8,) and d.masked_channels == [2] and d.meta == {"n_layers": 2}


def test_legacy_patch_result():
    from actlab.patch import PatchResult

    r = PatchResult.load(LEGACY / "patch_result")
    assert torch.equal(r.values, torch.tensor([[0.1, 0.9], [0.4, 0.2], [1.0, -0.1]]))
    assert r.dims == ("layer", "position") and r.labels["position"] == ["a", "b"]
    assert (r.clean, r.corrupt, r.metric) == (2.0, -1.0, "logit_diff") and r.per_pair.shape == (3, 2, 4)


def test_legacy_attribution():
    """The attribute family's public loader and the artifact reader both take the legacy pair."""
    from actlab.attribute import Attribution

    att = Attribution.load(LEGACY / "attribution")
    assert att.method == "ig" and att.tokens == ["The", " cat", " sat", "."]
    assert torch.allclose(att.scores, att.attr.sum(-1))
    a = load_artifact(LEGACY / "attribution", "attribute.attribution", legacy="actlab.attribution",
                      cfg_file="attribution.json", tensors_file="attribution.safetensors")
    assert a.version == 0 and a.config["method"] == "ig" and a.config["tokens"] == ["The", " cat", " sat", "."]
    assert torch.allclose(a.tensors["scores"], a.tensors["attr"].sum(-1))
    with pytest.raises(ArtifactError, match="expected 'actlab.direction'"):
        load_artifact(LEGACY / "attribution", "steer.direction", legacy="actlab.direction",
                      cfg_file="attribution.json", tensors_file="attribution.safetensors")
    with pytest.raises(ArtifactError, match="no 'artifact' block"):
        load_artifact(LEGACY / "attribution", "attribute.attribution", cfg_file="attribution.json",
                      tensors_file="attribution.safetensors")


def test_legacy_dictionaries():
    from actlab.dictionary import DictConfig, build, load

    d = load(LEGACY / "dictionary")
    ref = build(DictConfig(arch="topk", d_in=8, d_sae=16, k=2, site="blocks.1.resid_post"), seed=3)
    for k, v in ref.state_dict().items():
        assert torch.equal(d.state_dict()[k], v), k
    assert d.cfg.site == "blocks.1.resid_post"
    t = load(LEGACY / "dictionary_jumprelu_transcoder")
    assert t.cfg.arch == "jumprelu" and t.cfg.site_out == "blocks.0.mlp_out"
    ref = build(DictConfig(arch="jumprelu", d_in=8, d_sae=16, site="blocks.0.mlp_in", site_out="blocks.0.mlp_out",
                           d_out=8), seed=4)
    x = torch.randn(3, 8)
    assert torch.allclose(t(x), ref(x))


def test_legacy_trainer_checkpoint_resumes(tmp_path):
    from actlab.dictionary import DictConfig
    from actlab.dictionary.data import tensor_source
    from actlab.dictionary.trainer import TrainConfig, Trainer

    run = tmp_path / "run"
    shutil.copytree(LEGACY / "trainer_checkpoint", run)
    state = load_tensors(run / "ckpt-00000005" / "state.safetensors")
    tr = Trainer(DictConfig(arch="topk", d_in=8, d_sae=16, k=2),
                 TrainConfig(total_tokens=16 * 10, batch_size=16, lr=3e-3, warmup_steps=2, progress=False,
                             out=str(run), checkpoint_every=5, dead_tokens=64, seed=7),
                 tensor_source(torch.randn(256, 8), 16, seed=1))
    assert tr.state.step == 5 and tr.state.tokens == 80
    assert torch.equal(tr.model.W_dec.detach(), state["model.W_dec"])


def test_legacy_patch_basis_and_record_files():
    basis = load_tensors(LEGACY / "patch_basis" / "basis.safetensors", names=["direction"])["direction"]
    assert basis.shape == (2, 8)
    rec = load_tensors(LEGACY / "record" / "acts.safetensors")
    assert set(rec) == {"blocks.0.resid_post", "blocks.1.mlp_out", "input_ids", "attention_mask"}
    assert rec["blocks.0.resid_post"].shape == (2, 64)
    assert tensor_metadata(LEGACY / "record" / "acts.safetensors")["positions"] == "last"


def test_legacy_folders_are_unchanged():
    """Nothing rewrites the fixtures: they must stay what main wrote."""
    files = sorted(str(p.relative_to(LEGACY)) for p in LEGACY.rglob("*") if p.is_file())
    assert "steer_direction/direction.json" in files and "trainer_checkpoint/checkpoint.json" in files
    assert not any(f.endswith(".tmp") for f in files)


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    from actlab.artifact import atomic_folder

    out = tmp_path / "cache" / "model"
    with atomic_folder(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".") and not out.exists()
        (tmp / "a.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"x" * 10)
        assert not out.exists()                                  # nothing visible before the block ends
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.json", "sub", "sub/w.bin"]
    assert [p.name for p in out.parent.iterdir()] == ["model"]   # no temp left
    assert out.stat().st_mode & 0o777 == 0o777 & ~_current_umask()

    failed = tmp_path / "cache" / "broken"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_folder(failed) as tmp:
            (tmp / "a.json").write_text("{}")
            raise RuntimeError("half way")
    assert not failed.exists() and sorted(p.name for p in out.parent.iterdir()) == ["model"]

    empty = tmp_path / "cache" / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:
        (tmp / "b.txt").write_text("b")
    assert (empty / "b.txt").read_text() == "b"

    with pytest.raises(ArtifactError, match="written by someone else"):
        with atomic_folder(out) as tmp:
            (tmp / "other.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "sub"]   # theirs kept, ours removed
    assert sorted(p.name for p in out.parent.iterdir()) == ["empty", "model"]


def _current_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old
