"""NaN/Inf steering vectors, directions and interventions are refused with a clear error (issue 14 item 9): at
extract, load, apply, orthogonalise and save, from Python and from the CLI."""
import json

import pytest
import torch

from actlab import load_interventions
from actlab.cli import main
from actlab.steer import Direction, NormPreservingAdd, PromptAdd, ablate_everywhere, extract, orthogonalize_model
from actlab.steer.sla import ContextSteer
from actlab.steer.sweep import SweepConfig

NAN = float("nan")


def cli_error(capsys, argv, text):
    """The CLI refuses: ``error: <text...>`` on stderr with exit status 2 (or the library error itself)."""
    with pytest.raises((SystemExit, ValueError)) as ei:
        main(argv)
    if isinstance(ei.value, SystemExit):
        assert ei.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and text in err
    else:
        assert text in str(ei.value)


def nan_vector(d: int, value: float = NAN) -> torch.Tensor:
    v = torch.ones(d)
    v[3] = value
    return v


def poison(folder, value: float = NAN) -> None:
    """Overwrite a saved direction's tensor file with a non-finite vector (as a corrupted or hand-made file)."""
    from safetensors.torch import load_file, save_file

    f = folder / "direction.safetensors"
    v = load_file(str(f))["vector"]
    v[0] = value
    save_file({"vector": v}, str(f))


def good_direction(m, site="blocks.1.resid_post"):
    return Direction(vector=torch.randn(m.d_model, generator=torch.Generator().manual_seed(0)), site=site,
                     model=m.name, norms={"vector": 1.0, "resid_median": 1.0}, meta={"n_layers": m.n_layers})


@pytest.mark.parametrize("value", [NAN, float("inf")])
def test_direction_construct_save_load_refuse_nonfinite(tiny, tmp_path, value):
    m = tiny("tiny-llama")
    with pytest.raises(ValueError, match=r"'blocks.1.resid_post': vector contains NaN/Inf"):
        Direction(vector=nan_vector(m.d_model, value), site="blocks.1.resid_post")
    d = good_direction(m)
    d.vector[5] = value  # mutated after construction: save refuses and writes nothing
    with pytest.raises(ValueError, match="NaN/Inf"):
        d.save(tmp_path / "bad")
    assert not (tmp_path / "bad" / "direction.safetensors").exists()
    folder = good_direction(m).save(tmp_path / "dir")
    poison(folder, value)
    with pytest.raises(ValueError, match=r"direction.safetensors: .*vector.* contains NaN/Inf"):
        Direction.load(folder)
    with pytest.raises(ValueError, match="strength alpha .* is nan"):
        good_direction(m).to_interventions(NAN)
    with pytest.raises(ValueError, match="strength alpha .* NaN/Inf"):
        good_direction(m).to_interventions(torch.tensor([1.0, NAN]))


def test_extract_refuses_nonfinite_activations(tiny):
    m = tiny("tiny-llama")

    def break_it(act, ctx):
        return act * NAN

    with m.intervene({"blocks.0.resid_post": break_it}):
        with pytest.raises(ValueError, match=r"activations at 'blocks.1.resid_post' .* NaN/Inf"):
            extract(m, ["hello", "good day"], ["xq zv", "kkk"], "blocks.1.resid_post")


def test_interventions_refuse_nonfinite(tiny, tmp_path):
    m = tiny("tiny-llama")
    for make in (lambda: NormPreservingAdd(nan_vector(m.d_model)), lambda: PromptAdd(nan_vector(m.d_model)),
                 lambda: ContextSteer(nan_vector(m.d_model)), lambda: NormPreservingAdd(torch.ones(4), alpha=NAN),
                 lambda: ContextSteer(torch.ones(4), lam=float("inf"))):
        with pytest.raises(ValueError, match="NaN/Inf|is nan|is inf"):
            make()
    # a replay file whose vector was corrupted to NaN is refused on load
    path = good_direction(m).save_interventions(tmp_path / "s.json", alpha=2.0, mode="norm_add")
    from safetensors.torch import load_file, save_file

    tf = [p for p in tmp_path.iterdir() if p.suffix == ".safetensors"][0]
    ts = load_file(str(tf))
    for k in ts:
        ts[k][0] = NAN
    save_file(ts, str(tf))
    with pytest.raises(ValueError, match="NaN/Inf"):
        load_interventions(path)
    with pytest.raises(ValueError, match=r"strengths \[nan\] are not finite"):
        SweepConfig(strengths=[1.0, NAN])


def test_ablation_and_orthogonalisation_refuse_nonfinite_or_zero(tiny, tmp_path):
    m = tiny("tiny-llama")
    for v, msg in ((nan_vector(m.d_model), "NaN/Inf"), (nan_vector(m.d_model, float("inf")), "NaN/Inf"),
                   (torch.zeros(m.d_model), "norm 0")):
        with pytest.raises(ValueError, match=f"ablate_everywhere: direction .*{msg}"):
            ablate_everywhere(m, v)
        with pytest.raises(ValueError, match=f"orthogonalize_model: direction .*{msg}"):
            orthogonalize_model(m, v, tmp_path / "edited")
        assert not (tmp_path / "edited").exists()  # nothing written


def test_cli_refuses_nan_direction(tiny, tmp_path, capsys):
    m = tiny("tiny-llama")
    folder = good_direction(m).save(tmp_path / "dir")
    poison(folder)
    cli_error(capsys, ["steer", "apply", str(folder), "--model", "tiny-llama", "--orthogonalize",
                       str(tmp_path / "ortho")], "NaN/Inf")
    assert not (tmp_path / "ortho").exists()
    cli_error(capsys, ["steer", "apply", str(folder), "--out", str(tmp_path / "s.json")], "NaN/Inf")
    assert not (tmp_path / "s.json").exists()
    cli_error(capsys, ["steer", "generate", "tiny-llama", "--prompt", "hi", "--direction", str(folder)], "NaN/Inf")
    assert json.loads((folder / "direction.json").read_text())["site"] == "blocks.1.resid_post"
