"""The checkpoint-series training script and the emergence verb, end to end on a tiny model: the stored
magnitudes equal a direct recording of every checkpoint on the stored probe, each fit's R² is the R² of its own
parameters, training lowers the loss, and a run where every fit fails exits non-zero."""
import json

import numpy as np
import pytest
import torch

from actlab import load_model
from actlab.artifact import load_tensors
from actlab.cli import main
from actlab.stats.emergence import EXP_LOG, checkpoint_step, exp_log_curve, r_squared
from actlab.stats.train_checkpoints import CheckpointSeriesConfig, checkpoint_steps

TRAIN = ["--n-layers", "1", "--d-model", "32", "--d-ff", "64", "--n-heads", "2", "--context-length", "32",
         "--batch-size", "4", "--max-tokens", "4000"]


def test_checkpoint_steps():
    assert checkpoint_steps(8, 6) == [0, 1, 2, 3, 5, 8]
    assert checkpoint_steps(400, 10)[0] == 0 and checkpoint_steps(400, 10)[-1] == 400


def test_train_then_emergence(tmp_path, one_thread, capsys):
    ck = tmp_path / "ck"
    main(["stats", "train-checkpoints", "--out", str(ck), "--steps", "8", "--n-checkpoints", "6", *TRAIN])
    dirs = sorted(ck.glob("step-*"), key=checkpoint_step)
    assert [checkpoint_step(d) for d in dirs] == [0, 1, 2, 3, 5, 8]
    assert json.loads((dirs[-1] / "config.json").read_text())["actlab_step"] == 8
    em = tmp_path / "em"
    main(["stats", "emergence", str(ck), "--probe-contexts", "2", "--context-length", "32", "--out", str(em)])
    assert "wrote" in capsys.readouterr().out
    res = json.loads((em / "emergence.json").read_text())
    assert res["steps"] == [0, 1, 2, 3, 5, 8] and res["metric"] == "top1"
    probe = load_tensors(em / "probe.safetensors")["input_ids"]
    assert probe.shape == (2, 32) and len(res["top1"][0]) == 1
    losses = []
    for k, d in enumerate(dirs):                       # the stored numbers are the checkpoints' own
        m = load_model(d)
        sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
        rec = m.record(probe, sites)
        for i, s in enumerate(sites):
            top = rec[s].abs().flatten(1).max(1).values           # per sequence
            assert res["top1"][k][i] == pytest.approx(float(top.median()), rel=1e-5)
        with torch.no_grad():
            losses.append(float(m.module(input_ids=probe, labels=probe).loss))
    assert losses[-1] < losses[0] - 0.05               # the series is a training run, not six copies
    y = np.asarray(res["top1"])
    fitted = [layer for layer, f in res["fits"].items() if "params" in f]
    assert fitted, res["fits"]
    for layer in fitted:                               # each R² is the R² of its own parameters
        f = res["fits"][layer]
        pred = exp_log_curve(np.asarray(res["steps"], float), *[f["params"][n] for n in EXP_LOG.names])
        assert f["r2"] == pytest.approx(r_squared(y[:, int(layer)], pred), abs=1e-9)
    assert (em / "emergence.png").stat().st_size > 0
    with pytest.raises(ValueError, match="divisible"):
        CheckpointSeriesConfig(d_model=30, n_heads=4)


def test_emergence_fails_when_every_fit_fails(tmp_path, one_thread, cli_error):
    """Issue 14 item 13: `emergence` exited 0 with every fit failed; three checkpoints cannot fit five parameters."""
    ck = tmp_path / "ck"
    main(["stats", "train-checkpoints", "--out", str(ck), "--steps", "2", "--n-checkpoints", "3", *TRAIN])
    em = tmp_path / "em"
    cli_error(["stats", "emergence", str(ck), "--probe-contexts", "1", "--context-length", "32", "--out", str(em)],
              r"every layer's curve fit failed over 3 checkpoints .* needs at least 6 checkpoints")
    res = json.loads((em / "emergence.json").read_text())   # the measurements are kept
    assert len(res["top1"]) == 3 and all("error" in f for f in res["fits"].values())
