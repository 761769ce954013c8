"""Issue 14 item 13: heat map titles (and labels) fit in the figure, however few cells the grid has."""
import pytest

from actlab.patch import LogitDiff, activation_patch


@pytest.mark.parametrize("positions", ["all", "each"])
def test_heatmap_title_is_not_cut(tiny, tmp_path, positions):
    m = tiny("tiny-llama")
    met = LogitDiff(m.tokenizer("x")["input_ids"][-1], m.tokenizer("y")["input_ids"][-1])
    r = activation_patch(m, "the cat sat on", "the bat sat on", met, "blocks.0.resid_pre", positions=positions)
    fig = r.heatmap_figure(title="a deliberately long title that names the model, the sites and the metric in full")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    ax = fig.axes[0]
    for artist in [ax.title, *ax.get_yticklabels(), *ax.get_xticklabels()]:
        e = artist.get_window_extent(renderer)
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y1 <= box.y1 + 1, (artist.get_text(), e, box)
    assert "(denoise)" in r.heatmap_figure().axes[0].title.get_text()  # the default title names the direction
    assert r.heatmap(tmp_path / "h.png").stat().st_size > 0
