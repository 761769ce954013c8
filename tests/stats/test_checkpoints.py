"""The checkpoint-series training script and the emergence verb, end to end on a tiny model."""
import json

from actlab.cli import main
from actlab.stats.emergence import checkpoint_step
from actlab.stats.train_checkpoints import TrainConfig, checkpoint_steps


def test_checkpoint_steps():
    assert checkpoint_steps(8, 6) == [0, 1, 2, 3, 5, 8]
    assert checkpoint_steps(400, 10)[0] == 0 and checkpoint_steps(400, 10)[-1] == 400


def test_train_then_emergence(tmp_path, one_thread, capsys):
    ck = tmp_path / "ck"
    main(["stats", "train-checkpoints", "--out", str(ck), "--steps", "8", "--n-checkpoints", "6", "--n-layers", "2",
          "--d-model", "32", "--d-ff", "64", "--n-heads", "2", "--context-length", "32", "--batch-size", "4",
          "--max-tokens", "4000"])
    dirs = sorted(ck.glob("step-*"), key=checkpoint_step)
    assert [checkpoint_step(d) for d in dirs] == [0, 1, 2, 3, 5, 8]
    assert json.loads((dirs[-1] / "config.json").read_text())["actlab_step"] == 8
    em = tmp_path / "em"
    main(["stats", "emergence", str(ck), "--probe-contexts", "2", "--context-length", "32", "--out", str(em)])
    assert "wrote" in capsys.readouterr().out
    res = json.loads((em / "emergence.json").read_text())
    assert res["steps"] == [0, 1, 2, 3, 5, 8] and len(res["top1"]) == 6 and len(res["top1"][0]) == 2
    assert set(res["fits"]) == {"0", "1"}
    assert all(("r2" in f) or ("error" in f) for f in res["fits"].values())
    assert (em / "emergence.png").stat().st_size > 0
    try:
        TrainConfig(d_model=30, n_heads=4)
    except ValueError as e:
        assert "divisible" in str(e)
    else:
        raise AssertionError("bad config accepted")
