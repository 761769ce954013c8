"""Evaluation numbers equal hand computations; an identity dictionary spliced into a model changes nothing;
a transcoder trained on a tiny model's MLP beats the mean predictor by a wide margin."""
import torch

from actlab.dictionary import DictConfig, build
from actlab.dictionary.data import model_source, tensor_source
from actlab.dictionary.evaluate import density_histogram, evaluate, splice_ce
from actlab.dictionary.trainer import TrainConfig, Trainer

TEXTS = ["The cat sat on the mat and looked at the dog.", "Sparse autoencoders find features in activations.",
         "One two three four five six seven eight nine ten.", "A quick brown fox jumps over the lazy dog again."]


def identity_sae(d, site):
    m = build(DictConfig(arch="relu", d_in=d, d_sae=2 * d, site=site))
    eye = torch.eye(d)
    with torch.no_grad():
        m.W_enc.copy_(torch.cat([eye, -eye]))
        m.W_dec.copy_(torch.cat([eye, -eye]))
        m.b_enc.zero_()
        m.b_dec.zero_()
    return m


def test_evaluate_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    m = build(DictConfig(arch="topk", d_in=8, d_sae=32, k=3), seed=1)
    x = torch.randn(100, 8, generator=g)
    res = evaluate(m, tensor_source(x, 25, shuffle=False)(0))
    with torch.no_grad():
        acts = m.encode(x)
        y_hat = m(x)
    fvu = float((y_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert abs(res.fvu - fvu) < 1e-5 and res.tokens == 100
    assert abs(res.l0 - float((acts != 0).sum(1).float().mean())) < 1e-9
    fires = (acts != 0).float().mean(0)
    assert abs(res.dead_frac - float((fires == 0).float().mean())) < 1e-9
    assert abs(res.dense_frac - float((fires > 0.1).float().mean())) < 1e-9
    var_c = (x - x.mean(0)).pow(2).sum(0)
    assert abs(res.fvu_channel - float(((y_hat - x).pow(2).sum(0) / var_c).mean())) < 1e-5


def test_channel_fvu_sees_what_a_massive_channel_hides():
    """One channel 1000x larger than the rest: a reconstruction that keeps only that channel has a tiny plain FVU
    but a channel-normalised FVU near (d-1)/d."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    x[:, 0] *= 1000
    m = build(DictConfig(arch="relu", d_in=8, d_sae=2), seed=0)
    with torch.no_grad():  # latents +-e0: reconstructs channel 0 exactly, nothing else
        m.W_enc.zero_()
        m.W_dec.zero_()
        m.W_enc[0, 0], m.W_enc[1, 0] = 1.0, -1.0
        m.W_dec[0, 0], m.W_dec[1, 0] = 1.0, -1.0
        m.b_enc.zero_()
        m.b_dec.zero_()
    res = evaluate(m, tensor_source(x, 100, shuffle=False)(0))
    assert res.fvu < 1e-5
    assert abs(res.fvu_channel - 7 / 8) < 0.02


def test_density_histogram_png(tmp_path):
    density_histogram([0.0, 1e-4, 0.01, 0.2], tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _hand_zero_ce(m, site, enc, keep):
    """CE over predictions at ``keep`` positions (next token real) with the site zeroed at ``keep`` positions."""
    def zero(act, ctx):
        return act.masked_fill(keep[..., None], 0.0)
    with m.intervene([(site, zero)]):
        logits = m(enc).logits
    mask = enc["attention_mask"].bool()
    scored = (keep[:, :-1] & mask[:, 1:]).reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           enc["input_ids"][:, 1:].reshape(-1), reduction="none")[scored]
    return float(ce.mean()), int(scored.sum())


def test_identity_splice_is_exact(tiny):
    m = tiny("tiny-llama")
    site = "blocks.1.resid_mid"
    sae = identity_sae(m.d_model, site)
    enc = m.tokenize(TEXTS)
    mask = enc["attention_mask"].bool()
    # every position (the old behaviour, now an option): the zero-ablated CE equals a hand computation
    res = splice_ce(m, sae, TEXTS, skip_first=0, exclude_bos=False)
    assert res.ce_spliced == res.ce_clean and res.delta_loss == 0.0
    assert res.loss_recovered == 1.0
    ce, n = _hand_zero_ce(m, site, enc, mask)
    assert abs(res.ce_zero - ce) < 1e-5 and res.ce_zero != res.ce_clean and res.tokens == n
    # default: the first real token of each (left-padded) row and BOS tokens are neither spliced nor scored
    res = splice_ce(m, sae, TEXTS)
    assert res.loss_recovered == 1.0
    first = mask & (mask.long().cumsum(1) == 1)
    keep = mask & ~first & (enc["input_ids"] != m.tokenizer.bos_token_id)
    assert bool((mask & ~keep).sum(1).ge(1).all())   # something is excluded in every row
    ce, n = _hand_zero_ce(m, site, enc, keep)
    assert abs(res.ce_zero - ce) < 1e-5 and res.tokens == n


def test_splice_leaves_excluded_positions_clean(tiny):
    """A dictionary that is exact except at the BOS/first row (where it outputs garbage, as a real SAE does on the
    huge BOS activation) recovers the loss fully by default, and not when every position is spliced."""
    m = tiny("tiny-llama")
    site = "blocks.0.resid_post"
    sae = identity_sae(m.d_model, site)
    enc = m.tokenize(TEXTS)
    mask = enc["attention_mask"].bool()
    firsts = m.record(enc, sites=[site])[site][mask & (mask.long().cumsum(1) == 1)]   # first real token's rows

    class Garbled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.cfg, self.W_enc = sae, sae.cfg, sae.W_enc

        def forward(self, x):
            out = self.inner(x)
            hit = (x[:, None, :] - firsts[None]).abs().amax(-1).min(1).values < 1e-6
            return torch.where(hit[:, None], out + 50.0, out)

    g = Garbled()
    assert splice_ce(m, g, TEXTS).loss_recovered == 1.0
    assert splice_ce(m, g, TEXTS, skip_first=0, exclude_bos=False).loss_recovered < 0.99


def test_transcoder_beats_mean_predictor(tiny):
    m = tiny("tiny-llama")
    texts = [f"{w} number {i} is here, and {w} goes on to {i * 7 % 13}." for i in range(60)
             for w in ("alpha", "beta")]
    src = model_source(m, "blocks.0.mlp_in", texts, batch_size=256, site_out="blocks.0.mlp_out",
                       context_length=32, contexts_per_forward=16)
    dc = DictConfig(arch="topk", d_in=m.d_model, d_out=m.d_model, d_sae=256, k=16, site="blocks.0.mlp_in",
                    site_out="blocks.0.mlp_out", model=m.name)
    tc = TrainConfig(total_tokens=256 * 150, batch_size=256, lr=3e-3, warmup_steps=10, progress=False)
    tcr = Trainer(dc, tc, src).fit()
    res = evaluate(tcr, src(99))
    # a mean predictor has FVU >= 1 on any data; the trained transcoder explains most of the variance
    assert res.fvu < 0.3, res
    assert 0 < res.l0 <= 16
    sp = splice_ce(m, tcr, texts[:4])      # the transcoder replaces the MLP output: CE moves, stays finite
    assert sp.tokens > 0 and sp.ce_spliced != sp.ce_clean and sp.ce_spliced < 10


def test_splice_positions_drop_bos_anywhere_and_the_first_real_token():
    from actlab.dictionary import splice_positions
    ids = torch.tensor([[0, 0, 1, 5, 6, 1, 7], [1, 5, 6, 7, 1, 8, 9]])     # 0 = pad, 1 = BOS (packed documents)
    mask = (ids != 0).long()
    keep = splice_positions(ids, mask, skip_first=1, bos_id=1)
    assert keep.tolist() == [[False, False, False, True, True, False, True],
                             [False, True, True, True, False, True, True]]
    assert splice_positions(ids, mask, skip_first=2, bos_id=None)[0].tolist() == [False] * 4 + [True] * 3
