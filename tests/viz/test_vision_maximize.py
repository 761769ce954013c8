"""The digits models (trained, cached, reloaded) and activation maximisation on them."""
from __future__ import annotations

import pytest
import torch

from actlab.viz import VisionConfig, conv_sites, digits_model, vision_model
from actlab.viz.maximize import MaximizeConfig, maximize, plain_ascent
from actlab.viz.objectives import Unit, class_logits, objective
from actlab.viz.param import ImageParam, total_variation


def test_digits_models_train_accurate_and_cache(digits_cnn, digits_vit, viz_cache, digits16):
    assert digits_cnn.meta["test_accuracy"] > 0.9
    assert digits_vit.meta["test_accuracy"] > 0.85
    again = digits_model("cnn", cache=viz_cache)             # from the artifact: same weights, no training
    for (k, a), b in zip(digits_cnn.module.state_dict().items(), again.module.state_dict().values()):
        assert torch.equal(a, b), k
    _, te = digits16
    assert torch.equal(digits_cnn.module(te.x[:8]), again.module(te.x[:8]))
    assert conv_sites(digits_cnn) == {"module:conv1": 16, "module:conv2": 32, "module:conv3": 64}


def test_training_is_deterministic(tmp_path):
    cfg = VisionConfig(epochs=1, width=4)
    a = digits_model("cnn", cfg, cache=tmp_path / "a")
    b = digits_model("cnn", cfg, cache=tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()))


def test_bad_inputs_raise_clear_errors(digits_cnn):
    with pytest.raises(ValueError, match="arch"):
        VisionConfig(arch="resnet")
    with pytest.raises(ValueError, match="exactly one"):
        Unit("module:conv1")
    with pytest.raises(ValueError, match="channel 99 out of range"):
        objective(digits_cnn, Unit("module:conv1", channel=99))(torch.zeros(1, 1, 16, 16))
    with pytest.raises(KeyError):
        objective(digits_cnn, Unit("module:conv9", channel=0))
    with pytest.raises(TypeError, match="nn.Module"):
        vision_model("not a model")


def test_maximising_a_class_logit_gives_that_class(digits_cnn):
    """The issue's check: each class logit maximised -> the CNN calls the image that class with > 0.9."""
    classes = list(range(10))
    r = maximize(class_logits(digits_cnn, classes), (10, 1, 16, 16), MaximizeConfig(steps=96, lr=0.1))
    p = torch.softmax(digits_cnn.module(r.images), -1)
    conf = p[torch.arange(10), torch.tensor(classes)]
    assert bool((conf > 0.9).all()), conf
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert r.trace[-1] > r.trace[0]


def test_maximize_channel_neuron_direction_and_sae_latent(digits_cnn, digits_vit):
    x0 = torch.full((1, 1, 16, 16), 0.5)
    cfg = MaximizeConfig(steps=24, lr=0.1)
    d = torch.zeros(32)
    d[5] = 1.0
    torch.manual_seed(0)
    enc = torch.nn.Linear(32, 8)
    units = [Unit("module:conv2", channel=5), Unit("module:conv2", neuron=5 * 64 + 27),
             Unit("module:conv2", direction=d), Unit("module:conv2", latent=3, encoder=lambda z: torch.relu(enc(z)))]
    for u in units:
        f = objective(digits_cnn, u)
        r = maximize(f, (1, 1, 16, 16), cfg)
        assert float(r.values[0]) > float(f(x0).detach()[0]) + 0.1, u.describe()
    # direction == channel: the same value (direction averaged over positions = channel mean)
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(objective(digits_cnn, units[0])(x), objective(digits_cnn, units[2])(x), atol=1e-6)
    # a ViT token site: a direction in the residual stream of block 0
    f = objective(digits_vit, Unit("module:blocks.0", direction=torch.randn(32)))
    r = maximize(f, (1, 1, 16, 16), cfg)
    assert float(r.values[0]) > float(f(x0).detach()[0])


def test_fourier_parameterisation_round_trips_an_image_and_is_decorrelated():
    img = torch.rand(2, 1, 16, 16) * 0.8 + 0.1
    p = ImageParam(img.shape, param="fourier", init=img, noise=0.0)
    assert torch.allclose(p(), img, atol=1e-5)
    p3 = ImageParam((1, 3, 8, 8), param="fourier", init=torch.full((1, 3, 8, 8), 0.3), noise=0.0)
    assert torch.allclose(p3(), torch.full((1, 3, 8, 8), 0.3), atol=1e-5)
    # a unit step on the spectrum moves low frequencies more than high ones (1/f scaling)
    q = ImageParam((1, 1, 16, 16), param="fourier", noise=0.0, squash=False)
    with torch.no_grad():
        q.data_[0, 0, 0, 1, 0] += 1.0          # lowest horizontal frequency
        low = q.raw().abs().max().item()
        q.data_.zero_()
        q.data_[0, 0, 8, 8, 0] += 1.0          # highest
        high = q.raw().abs().max().item()
    assert low > 3 * high


def test_random_transform_translates_and_scales():
    from actlab.viz.maximize import random_transform

    x = torch.rand(1, 1, 12, 12)
    shifted = [random_transform(x, 2, 0.0, torch.Generator().manual_seed(s)) for s in range(6)]
    moved = 0
    for y in shifted:    # a pure translation by whole pixels: the interior equals a rolled copy
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.allclose(y[..., 2:-2, 2:-2], torch.roll(x, (-dy, -dx), (2, 3))[..., 2:-2, 2:-2], atol=1e-5)]
        assert hits
        moved += hits[0] != (0, 0)
    assert moved >= 3
    z = random_transform(torch.arange(144.0).view(1, 1, 12, 12), 0, 0.3, torch.Generator().manual_seed(1))
    assert not torch.allclose(z, torch.arange(144.0).view(1, 1, 12, 12), atol=1e-3)   # scaled
    assert torch.equal(random_transform(x, 0, 0.0, torch.Generator()), x)


def test_regularisers_do_what_they_say(digits_cnn):
    f = objective(digits_cnn, Unit(neuron=3))
    plain = maximize(f, (1, 1, 16, 16), MaximizeConfig(steps=48, lr=0.1, param="pixel", jitter=0, scale=0))
    smooth = maximize(f, (1, 1, 16, 16), MaximizeConfig(steps=48, lr=0.1, param="pixel", jitter=0, scale=0, tv=100.0))
    assert float(total_variation(smooth.images)) < 0.7 * float(total_variation(plain.images))
    ball = maximize(lambda x: x.flatten(1) @ torch.ones(256), (1, 1, 16, 16),
                    MaximizeConfig(steps=20, param="pixel", squash=False, max_norm=2.0, jitter=0, scale=0))
    assert abs(float(ball.images.norm()) - 2.0) < 1e-4
    cb = maximize(lambda x: x.flatten(1).sum(1), (1, 1, 16, 16),
                  MaximizeConfig(steps=5, param="pixel", squash=False, center_bias=True, jitter=0, scale=0, lr=0.1))
    centre, corner = float(cb.images[0, 0, 8, 8]), float(cb.images[0, 0, 0, 0])
    assert centre > corner  # the early, centred gradient has moved the middle most
    base = plain_ascent(f, (1, 1, 16, 16), steps=48, lr=0.1)
    assert float(f(base)) > 0


def test_a_torchvision_style_user_module():
    """features / avgpool / classifier like torchvision's VGG/AlexNet: sites by path, channels, maximisation."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                                torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 12, 3, padding=1),
                                                torch.nn.ReLU())
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)))

    torch.manual_seed(0)
    m = vision_model(Net(), name="user")
    assert conv_sites(m) == {"module:features.0": 8, "module:features.3": 12}
    assert not any(p.requires_grad for p in m.module.parameters()) and not m.module.training
    f = objective(m, Unit("module:features.3", channel=7))
    r = maximize(f, (2, 3, 16, 16), MaximizeConfig(steps=30, lr=0.1))
    assert r.images.shape == (2, 3, 16, 16)
    assert bool((r.values > f(torch.full((2, 3, 16, 16), 0.5)).detach()).all())


def test_maximize_an_actlab_sae_latent(digits_cnn, digits16):
    """A real actlab Dictionary's encode as the unit's encoder (the latent most active on digits at conv2)."""
    from actlab.dictionary import DictConfig, build

    sae = build(DictConfig(arch="relu", d_in=32, d_sae=64))
    tr, _ = digits16
    from actlab.viz.objectives import site_codes

    codes = site_codes(digits_cnn, tr.x[:64], "module:conv2")               # [64, 32] channel means
    latent = int(sae.encode(codes).mean(0).argmax())
    f = objective(digits_cnn, Unit("module:conv2", latent=latent, encoder=sae.encode))
    r = maximize(f, (1, 1, 16, 16), MaximizeConfig(steps=30, lr=0.1))
    assert float(r.values[0]) > float(f(tr.x[:64]).detach().max())          # beyond every real digit
