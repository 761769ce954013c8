"""Directions: planted direction recovered by each method, massive-channel masking, artifact round trip, replay."""
import json

import pytest
import torch

from actlab import Add, load_interventions
from actlab.steer import Direction, direction_from_acts, extract
from actlab.steer.directions import collect


def cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


@pytest.mark.parametrize("method", ["mean_diff", "pca", "probe"])
def test_synthetic_planted_direction_recovered(method):
    g = torch.Generator().manual_seed(0)
    d, n = 64, 1000
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    neg = torch.randn(n, d, generator=g)
    pos = torch.randn(n, d, generator=g) + 2.0 * u
    v = direction_from_acts(pos, neg, method)
    assert cos(v, u) > 0.95
    # swapping the sides flips the direction (pca's sign is aligned with the mean difference, never arbitrary)
    assert torch.allclose(direction_from_acts(neg, pos, method), -v, atol=1e-3)
    # every method is scaled to the mean difference's projection, so strengths compare across methods
    assert abs(float(v @ torch.nn.functional.normalize(v, dim=0)) - float((pos.mean(0) - neg.mean(0)) @
                                                                        torch.nn.functional.normalize(v, dim=0))) < 1e-4


@pytest.mark.parametrize("method", ["mean_diff", "pca"])
def test_model_planted_direction_recovered(tiny, method):
    """Different random texts per side; the positive side gets a planted vector at block 0's output.
    (The probe is checked on isotropic data above: on a model's anisotropic activations a discriminative direction
    is Sigma^-1-weighted and legitimately differs from the planted shift.)"""
    m = tiny("tiny-llama")
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    texts = ["".join(letters[int(i)] for i in torch.randint(0, 27, (12,), generator=g)) for _ in range(48)]
    with m.intervene({"blocks.0.resid_post": Add(u, alpha=1.5)}):
        pos, _ = collect(m, texts[:24], ["blocks.1.resid_pre"])
    neg, _ = collect(m, texts[24:], ["blocks.1.resid_pre"])
    v = direction_from_acts(pos["blocks.1.resid_pre"], neg["blocks.1.resid_pre"], method, paired=False)
    assert cos(v, u) > 0.95
    # the high-level entry point gives the same mean difference as the tensor-level one
    if method == "mean_diff":
        with m.intervene({"blocks.0.resid_post": Add(u, alpha=1.5)}):
            pa, _ = collect(m, texts[:4], ["blocks.1.resid_pre"], position="mean")
        assert pa["blocks.1.resid_pre"].shape == (4, m.d_model)


def test_massive_channel_masking():
    g = torch.Generator().manual_seed(2)
    d, n = 64, 200
    u = torch.zeros(d)
    u[:8] = 1 / 8 ** 0.5
    neg = torch.randn(n, d, generator=g)
    pos = torch.randn(n, d, generator=g) + 4.0 * u
    neg[:, 7 + 8] += 300 + 100 * torch.randn(n, generator=g)  # a massive, noisy channel
    pos[:, 7 + 8] += 320 + 100 * torch.randn(n, generator=g)  # differs by prompt set, as massive channels do
    neg[:, 20] += 50  # moderately massive: 50x the median channel, but below 20x the mean magnitude
    pos[:, 20] += 50
    from actlab.steer.directions import massive_channels

    naive = direction_from_acts(pos, neg)
    mask = massive_channels(torch.cat([pos, neg]), 20.0)
    assert mask == [15, 20]
    masked = direction_from_acts(pos, neg, mask=mask)
    assert cos(naive, u) < 0.5 < 0.9 < cos(masked, u)
    assert float(masked[15]) == 0.0 == float(masked[20])


def test_probe_weight_in_input_units():
    """The probe is fitted on standardised inputs and mapped back: rescaling a channel by s divides its weight by s."""
    from actlab.steer.directions import logistic_probe

    g = torch.Generator().manual_seed(5)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(400, generator=g) > 0).float()
    s = torch.tensor([10.0, 0.1, 1, 2, 3, 4, 5, 6])
    w, ws = logistic_probe(x, y), logistic_probe(x * s, y)
    assert torch.allclose(ws, w / s, rtol=1e-3, atol=1e-5)


def test_bad_inputs_have_clear_errors(tiny):
    m = tiny("tiny-llama")
    with pytest.raises(ValueError, match="unknown method 'caa'"):
        extract(m, ["a"], ["b"], "blocks.0.resid_post", method="caa")
    with pytest.raises(ValueError, match="needs chat=True"):
        extract(m, ["a"], ["b"], "blocks.0.resid_post", position="post_inst")
    with pytest.raises(KeyError, match="unknown site"):
        extract(m, ["a"], ["b"], "blocks.9.resid_post")
    with pytest.raises(ValueError, match="same d"):
        direction_from_acts(torch.zeros(3, 4), torch.zeros(3, 5))


def test_direction_artifact_and_cli_replay(tiny, tmp_path, capsys):
    m = tiny("tiny-llama")
    d = extract(m, ["hello there", "good day"], ["xq zv", "kkk jj"], "blocks.1.resid_post", position="mean")[
        "blocks.1.resid_post"]
    folder = d.save(tmp_path / "dir")
    js = json.loads((folder / "direction.json").read_text())
    assert js["artifact"]["kind"] == "steer.direction" and js["artifact"]["format_version"] == 1
    assert js["model"] == "tiny-llama" and js["method"] == "mean_diff"
    assert js["position"] == "mean" and len(js["data_hash"]) == 16 and js["norms"]["vector"] > 0
    d2 = Direction.load(folder)
    assert torch.equal(d2.vector, d.vector) and d2.site == d.site
    # interventions file replayable by the core and by `actlab generate`
    path = d2.save_interventions(tmp_path / "steer.json", alpha=8.0, mode="norm_add")
    (site, iv), = load_interventions(path)
    assert site == "blocks.1.resid_post" and iv.op == "norm_add" and iv.alpha == 8.0
    with m.intervene(d2.to_interventions(8.0, mode="norm_add")):
        direct = m.generate("hello", max_new_tokens=6)
    with m.intervene(load_interventions(path)):
        replay = m.generate("hello", max_new_tokens=6)
    plain = m.generate("hello", max_new_tokens=6)
    assert replay == direct != plain
    from actlab.cli import main

    main(["generate", "tiny-llama", "--prompt", "hello", "--intervention", str(path), "--max-new-tokens", "6"])
    assert direct in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no direction.json"):
        Direction.load(tmp_path)
    js["artifact"]["format_version"] = 99  # a newer actlab's file is refused, naming the file
    (folder / "direction.json").write_text(json.dumps(js))
    with pytest.raises(ValueError, match=r"direction.json has format_version 99"):
        Direction.load(folder)
    js["artifact"]["kind"] = "patch.result"
    (folder / "direction.json").write_text(json.dumps(js))
    with pytest.raises(ValueError, match=r"is a 'patch.result' artifact; expected 'steer.direction'"):
        Direction.load(folder)


def test_scales():
    """raw = the vector, unit = norm 1, resid = units of the median residual norm at the site."""
    v = torch.tensor([3.0, 4.0])
    d = Direction(vector=v, site="blocks.0.resid_post", norms={"vector": 5.0, "resid_median": 7.0})
    assert torch.allclose(d.scaled(2.0, "raw"), 2 * v)
    assert torch.allclose(d.scaled(2.0, "unit"), 2 * v / 5)
    assert torch.allclose(d.scaled(2.0, "resid"), 2 * 7.0 * v / 5)
    with pytest.raises(ValueError, match="needs norms\\['resid_median'\\]"):
        Direction(vector=v, site="x").scaled(1.0, "resid")
