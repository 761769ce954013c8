"""`actlab stats` end to end: report files exist and their numbers equal a direct computation from the recorded
activations of the same inputs (tiny model; SmolLM2 with its real massive activation in channel 507)."""
import json
import math
import os

import pytest
from safetensors.torch import load_file

from actlab.cli import main
from actlab.stats.report import PLOTS

TEXT = ("The quick brown fox jumps over the lazy dog. Activation statistics tell us where a model stores large "
        "values, how sparse its MLP units are and how hard it is to quantize. ") * 40


def _files_exist(out, calibration=True):
    for name in ["report.md", "stats.json", "inputs.safetensors", PLOTS["massive"], PLOTS["sparsity"],
                 PLOTS["ranges"]] + ([PLOTS["calibration"]] if calibration else []):
        assert (out / name).stat().st_size > 0, name


def test_report_tiny_matches_direct(tiny, tmp_path, capsys, one_thread):
    data = tmp_path / "d.txt"
    data.write_text(TEXT)
    out = tmp_path / "rep"
    main(["stats", "tiny-llama", "--data", str(data), "--tokens", "512", "--context-length", "64", "--out", str(out),
          "--ablation-tokens", "64", "--eval-tokens", "64", "--calib-contexts", "2", "--calib-length", "32"])
    assert "wrote" in capsys.readouterr().out
    _files_exist(out)
    st = json.loads((out / "stats.json").read_text())
    assert st["meta"]["n_tokens"] == 512 and st["meta"]["format_version"] == 1
    ids = load_file(str(out / "inputs.safetensors"))["input_ids"]
    assert ids.shape == (8, 64)
    m = tiny("tiny-llama")
    sites = ["blocks.1.resid_post", "blocks.0.mlp_act", "module:model.layers.1.self_attn.q_proj:in"]
    rec = m.record(ids, sites)
    h = rec["blocks.1.resid_post"].abs()
    lay = st["massive"]["layers"][1]
    assert lay["top1_median"] == pytest.approx(float(h.flatten(1).max(1).values.median()), rel=1e-5)
    assert lay["top1_max"] == pytest.approx(float(h.max()), rel=1e-5)
    assert lay["top"][0]["magnitude"] == pytest.approx(float(h.max()), rel=1e-5)
    a = rec["blocks.0.mlp_act"]
    eps = st["sparsity"]["eps"]
    assert eps == 0.01                                        # SiLU MLP: documented threshold
    assert st["sparsity"]["layers"][0]["active_frac_mean"] == pytest.approx(float((a.abs() > eps).float().mean()),
                                                                            rel=1e-5)
    q = rec["module:model.layers.1.self_attn.q_proj:in"].reshape(-1, 64).double()
    g = st["outliers"]["groups"]["model.layers.1.self_attn.{q_proj,k_proj,v_proj}"]
    assert g["absmax"] == pytest.approx(float(q.abs().max()), rel=1e-5)
    kurt = ((q - q.mean(0)) ** 4).mean(0) / q.var(0, unbiased=False) ** 2
    assert g["kurtosis_max"] == pytest.approx(float(kurt.max()), rel=1e-3)
    cal = st["calibration"]
    assert len(cal["rows"]) == 9 and math.isfinite(cal["fp_ppl"])
    assert set(cal["calib_contexts"]) == {"in-distribution", "random punctuation", "python code"}
    md = (out / "report.md").read_text()
    assert "## MLP activation sparsity" in md and "## Calibration-set sensitivity" in md


def test_report_bad_input(tmp_path, cli_error):
    cli_error(["stats", "tiny-llama", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
              "does not exist")
    cli_error(["stats", "tiny-llama", "--tokens", "10", "--context-length", "64", "--out", str(tmp_path / "o")],
              "at least one context")


@pytest.mark.real
def test_report_smollm2_end_to_end(smollm2, tmp_path):
    from actlab.stats.report import StatsConfig, run_stats

    out = tmp_path / "rep"
    # a few thousand statistics tokens; 128 held-out tokens for the ablation, one context for the attention-sink
    # check (the calibration study is covered on the tiny model)
    cfg = StatsConfig(model="smollm2-135m-instruct", out=str(out), tokens=2048, context_length=128, batch_size=4,
                      ablation_tokens=128, sink_contexts=1, eval_tokens=0)
    run_stats(cfg, model=smollm2, progress=False)
    _files_exist(out, calibration=False)
    st = json.loads((out / "stats.json").read_text())
    mv = st["massive"]
    assert 8 <= mv["first_layer"] <= 14 and 507 in mv["recurring_channels"]   # measured: 11 (ch. 507, |h| ~ 24000)
    ids = load_file(str(out / "inputs.safetensors"))["input_ids"]
    h = smollm2.record(ids, ["blocks.15.resid_post"])["blocks.15.resid_post"]
    top = mv["layers"][15]["top"][0]
    assert (top["pos"], top["channel"]) == (0, 507) and top["magnitude"] > 5000
    assert top["value"] == pytest.approx(float(h[top["seq"], 0, 507]), rel=1e-4)
    med = h.abs().flatten(1).kthvalue((h[0].numel() + 1) // 2, dim=1).values
    assert mv["layers"][15]["median_abs"] == pytest.approx(float(med.median()), rel=1e-4)
    ab = mv["ablation"]
    assert ab["ppl_zero"] > 2 * ab["ppl_base"] and abs(ab["ppl_mean"] - ab["ppl_base"]) < 0.1 * ab["ppl_base"]
    sink = mv["attention_sink"]
    assert sink["mean_mass_after_first_layer"] > 2 * sink["uniform_baseline"]
    assert st["sparsity"]["layers"][3]["n_tokens"] == 2048


SMALL = ["--tokens", "128", "--context-length", "64", "--ablation-tokens", "0", "--eval-tokens", "0",
         "--sink-contexts", "0"]


def test_short_text_uses_its_own_length(tmp_path, capsys):
    """Issue 14 item 13: two sentences used to be refused ("fewer than one context of 256")."""
    data = tmp_path / "short.txt"
    data.write_text("Massive activations are rare. They sit on the first token.")
    out = tmp_path / "rep"
    old = os.umask(0o027)
    try:
        main(["stats", "tiny-llama", "--data", str(data), "--out", str(out)])
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    for f in out.iterdir():                                   # issue 14 item 13: files followed 0600, not the umask
        assert (f.stat().st_mode & 0o777) == 0o640, f
    m_ids = load_file(str(out / "inputs.safetensors"))["input_ids"]
    from actlab import load_model
    from actlab.data.pack import doc_tokens

    n = len(doc_tokens(load_model("tiny-llama").tokenizer, [data.read_text()])[0])
    assert 2 <= n < 256 and m_ids.shape == (1, n)
    st = json.loads((out / "stats.json").read_text())
    assert st["meta"]["context_length"] == n and st["meta"]["n_tokens"] == n
    note = f"holds only {n} tokens, fewer than one context of 256: the text's own length ({n} tokens) is used"
    assert any(note in x for x in st["meta"]["notes"]) and note in printed
    assert any("ablation test and the calibration study are skipped" in x for x in st["meta"]["notes"])
    assert note in (out / "report.md").read_text()
    assert "ablation" not in st["massive"] and not st["calibration"]


def test_data_demo_and_progress_of_every_section(tiny, tmp_path, capsys):
    """Issue 14 item 13: `stats --data demo` failed; after the statistics bar the sections ran silently."""
    from actlab.data import demo_corpus
    from actlab.stats.report import StatsConfig, run_stats

    out = tmp_path / "rep"
    main(["stats", "tiny-llama", "--data", "demo", "--out", str(out), *SMALL])
    assert json.loads((out / "stats.json").read_text())["meta"]["data"] == str(demo_corpus())
    capsys.readouterr()
    cfg = StatsConfig(model="tiny-llama", out=str(out), tokens=128, context_length=64, ablation_tokens=64,
                      eval_tokens=64, calib_contexts=1, calib_length=32, sink_contexts=1)
    rep = run_stats(cfg, model=tiny("tiny-llama"), progress=True)
    err = capsys.readouterr().err
    assert "stats: writing the report" in err and "calibration" in err and "stats: calibration study" in err
    if rep.massive.get("first_layer") is not None:              # these run only where massive activations exist
        assert "stats: ablation test" in err and "stats: attention sink" in err


def _report_files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}


def test_disk_full_keeps_the_previous_report(tiny, small_fs, tmp_path):
    """Issue 14 item 12 on a real full filesystem: the failed run names the cause and leaves the previous complete
    report (every file byte for byte) and no temporary file or staging folder."""
    from actlab.artifact import ArtifactError
    from actlab.stats.report import StatsConfig, run_stats

    fs = small_fs("3m")
    out = fs / "rep"
    data = tmp_path / "d.txt"
    data.write_text(TEXT)
    cfg = dict(model="tiny-llama", data=str(data), out=str(out), tokens=128, context_length=64, ablation_tokens=0,
               eval_tokens=0, sink_contexts=0)
    run_stats(StatsConfig(**cfg), model=tiny("tiny-llama"), progress=False)
    before = _report_files(out)
    assert {"report.md", "stats.json", "inputs.safetensors"} <= set(before)
    ballast = fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:              # fill the filesystem up to its last bytes
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(ballast, ballast.stat().st_size - 8192)      # two pages: room for the lock file's PID only
    with pytest.raises(ArtifactError, match=r"(?i)no space left on device writing .*stats.json.*previous report"):
        run_stats(StatsConfig(**{**cfg, "tokens": 192}), model=tiny("tiny-llama"), progress=False)
    assert _report_files(out) == before
    # room for stats.json and inputs.safetensors but not for the plots: the failure comes after files that were
    # written fine, and still nothing of the new report reaches the folder
    pages = -(-len(before["stats.json"]) // 4096) + 4
    os.truncate(ballast, ballast.stat().st_size - pages * 4096)
    with pytest.raises(ArtifactError, match=r"(?i)no space left on device writing .*\.png.*previous report"):
        run_stats(StatsConfig(**{**cfg, "tokens": 192}), model=tiny("tiny-llama"), progress=False)
    assert _report_files(out) == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".actlab.lock"]
    ballast.unlink()
    run_stats(StatsConfig(**{**cfg, "tokens": 192}), model=tiny("tiny-llama"), progress=False)   # space again: works
    assert _report_files(out)["inputs.safetensors"] != before["inputs.safetensors"]


HOLDER = """
import sys, time
from actlab.artifact import folder_lock
with folder_lock(sys.argv[1], what="test"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_stats_into_one_folder_is_refused(tmp_path, cli_error):
    """Issue 14 item 11: the output folder is locked for the run; a second run is refused naming the holder."""
    import subprocess
    import sys

    out = tmp_path / "rep"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        cli_error(["stats", "tiny-llama", "--out", str(out), *SMALL],
                  rf"rep is in use by another actlab process \(pid {proc.pid}\)")
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "report.md").exists()
