"""``actlab viz`` verbs end to end on the cached digits CNN (small settings): PNG, gallery, artifact."""
from __future__ import annotations

import pytest

from actlab.artifact import load_artifact
from actlab.cli import main


@pytest.fixture
def cache(viz_cache, digits_cnn):  # the session's trained CNN: no retraining here
    return str(viz_cache)


def _check(out, verb, pngs):
    html = (out / "index.html").read_text()
    for p in pngs:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p in html
    return load_artifact(out, f"viz.{verb}", tensors_file="result.safetensors")


def test_maximize_and_traverse(tmp_path, cache, capsys):
    out = tmp_path / "max"
    main(["viz", "maximize", "--neuron", "4", "--steps", "48", "--lr", "0.1", "-n", "2", "--cache", cache,
          "--out", str(out)])
    art = _check(out, "maximize", ["maximize.png"])
    assert art.tensors["images"].shape == (2, 1, 16, 16) and art.config["run"]["neuron"] == 4
    assert "pred 4" in (out / "index.html").read_text()
    out = tmp_path / "trav"
    main(["viz", "traverse", "--source", "0", "--target", "5", "--steps", "20", "--cache", cache, "--out", str(out)])
    art = _check(out, "traverse", ["path.png"])
    assert float(art.tensors["values"].min()) >= art.config["level"] - 1e-5
    assert "wrote" in capsys.readouterr().out


def test_facets_and_mds(tmp_path, cache):
    out = tmp_path / "fac"
    main(["viz", "facets", "--neuron", "2", "--n-facets", "2", "--top", "30", "--steps", "10", "--cache", cache,
          "--out", str(out)])
    _check(out, "facets", ["facets.png", "means.png", "facet0_members.png", "facet1_members.png"])
    out = tmp_path / "mds"
    main(["viz", "mds", "--site", "module:conv2", "--n-clusters", "3", "--rounds", "2", "--steps", "5",
          "--cache", cache, "--out", str(out)])
    art = _check(out, "mds", ["stimuli.png"])
    assert sum(art.config["sizes"]) == 32


def test_roar_table(tmp_path):
    out = tmp_path / "roar"
    main(["viz", "roar", "--methods", "oracle,random", "--n-train", "200", "--n-test", "100", "--epochs", "3",
          "--out", str(out)])
    art = _check(out, "roar", ["inputs.png", "attr_oracle.png", "attr_random.png"])
    table = {r[0]: r for r in art.config["table"][1:]}
    assert float(table["oracle"][1]) == 1.0 and abs(float(table["random"][1]) - 0.5) < 0.05


def test_bad_flags_exit_2_with_the_reason(capsys):
    for argv, why in ((["viz", "maximize", "--out", "x"], "exactly one of --channel or --neuron"),
                      (["viz", "roar", "--methods", "ig,nope"], "unknown --methods"),
                      (["viz", "maximize", "--neuron", "1", "--model", "resnet"], "--model must be one of")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert why in capsys.readouterr().err
