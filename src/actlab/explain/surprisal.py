"""Surprisal scoring (spec §2): a base LM reads each example with and without the explanation as a prefix; the
gain in log-probability should be larger for activating examples than for non-activating ones. Score = AUROC of
the gain. The LM is a callable ``logprob(prefix, text) -> float`` (summed log-probability of the text's tokens
after the prefix), so a stub LM tests the harness; :func:`model_logprob` makes one from an actlab causal LM."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from actlab.explain.examples import Example
from actlab.explain.metrics import auroc
from actlab.explain.scorers import Scorer, ScoreResult

if TYPE_CHECKING:
    from actlab.models import Model

LogProb = Callable[[str, str], float]
TEMPLATE = "Text about {explanation}:"


def model_logprob(model: Model) -> LogProb:
    """``logprob(prefix, text)``: sum of ``log p(text token | everything before)`` under ``model``, the input being
    a start token (BOS, else EOS), the prefix's tokens, then the text's tokens (each tokenized on its own)."""
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is None:
        raise ValueError(f"{model.name}: the tokenizer has neither a BOS nor an EOS token to start a text with")

    @torch.no_grad()
    def logprob(prefix: str, text: str) -> float:
        p = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        t = tok(text, add_special_tokens=False)["input_ids"]
        if not t:
            raise ValueError("logprob of an empty text")
        ids = torch.tensor([[start] + p + t], device=model.device)
        logits = model(ids).logits[0, :-1].float().log_softmax(-1)
        tgt = ids[0, 1:]
        lp = logits.gather(1, tgt[:, None])[:, 0]
        return float(lp[len(p):].sum())
    return logprob


class SurprisalScorer(Scorer):
    """AUROC of ``logprob(template(explanation), example) - logprob("", example)``, activating vs not."""

    name = "surprisal"

    def __init__(self, logprob: LogProb, template: str = TEMPLATE):
        if "{explanation}" not in template:
            raise ValueError(f"the template must contain {{explanation}}; got {template!r}")
        self.logprob, self.template = logprob, template

    def score(self, explanation: str, activating: Sequence[Example], non_activating: Sequence[Example],
              tokenizer) -> ScoreResult:
        prefix = self.template.format(explanation=explanation)
        exs = list(activating) + list(non_activating)
        records = []
        for x in exs:
            text = x.text(tokenizer)
            gain = self.logprob(prefix, text) - self.logprob("", text)
            records.append({"kind": x.kind, "quantile": x.quantile, "start": x.start, "text": text,
                            "label": x.kind == "activating", "gain": gain})
        a = auroc([r["label"] for r in records], [r["gain"] for r in records])
        latent = exs[0].latent if exs else -1
        return ScoreResult(self.name, latent, explanation, len(activating), len(non_activating), None, None, None,
                           None, a, {}, {"template": self.template}, records)
