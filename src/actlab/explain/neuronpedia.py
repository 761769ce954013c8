"""Export features in Neuronpedia's own export layout and JSON field names, so they can be imported or compared.

Layout (as Neuronpedia's ``neuronpedia_utils`` exporters write it, one source = ``<layer>-<set>``):
``<out>/<modelId>/<source>/features/batch-0.jsonl.gz``, ``activations/batch-0.jsonl.gz``,
``explanations/batch-0.jsonl.gz`` and ``explanation_scores/batch-0.jsonl.gz`` (one JSON object per line). Fields are
those of Neuronpedia's ``Feature`` / ``Activation`` / ``Explanation`` db models and its ``ExplanationScore`` table
(``neuronpedia_utils/db_models/*.py``, ``apps/webapp/prisma/schema.prisma``): camelCase where Neuronpedia has
camelCase (``maxValue``, ``maxValueTokenIndex``, ``explanationModelName``) and snake_case where it has
snake_case (``pos_str``, ``neg_values``, ``frac_nonzero``). Ids are content hashes, so a re-export is identical.
Neuronpedia's own exporter does not ship scores; ``explanation_scores`` follows its database table.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actlab.artifact import atomic_write_bytes
from actlab.explain.cache import LatentCache
from actlab.explain.examples import ExampleConfig, activating_windows
from actlab.explain.text import token_pieces

if TYPE_CHECKING:
    from actlab.explain.explainers import Explanation
    from actlab.explain.scorers import ScoreResult
    from actlab.models import Model

FEATURE_FIELDS = ("modelId", "layer", "index", "creatorId", "createdAt", "maxActApprox", "hasVector", "vector",
                  "vectorLabel", "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices", "topkCosSimValues",
                  "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                  "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
                  "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1", "neg_str",
                  "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
                  "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                  "decoder_weights_dist", "sourceSetName")
ACTIVATION_FIELDS = ("id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue",
                     "values", "creatorId", "dataSource", "dataIndex", "dfaValues", "dfaTargetIndex", "dfaMaxValue",
                     "createdAt", "lossValues", "logitContributions", "binMin", "binMax", "binContains",
                     "qualifyingTokenIndex", "zIndices", "zValues")
EXPLANATION_FIELDS = ("id", "modelId", "layer", "index", "description", "authorId", "embedding", "triggeredById",
                      "typeName", "explanationModelName", "notes", "createdAt")
SCORE_FIELDS = ("id", "initiatedByUserId", "value", "explanationId", "explanationScoreTypeName",
                "explanationScoreModelName", "jsonDetails", "createdAt")
CREATOR = "actlab"


def _id(*parts: Any) -> str:
    return "actlab" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:19]


def _write(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(path, gzip.compress(data, compresslevel=5, mtime=0))


def read_batch(path: str | Path) -> list[dict]:
    """The records of one ``batch-N.jsonl.gz``."""
    return [json.loads(line) for line in gzip.decompress(Path(path).read_bytes()).decode("utf-8").splitlines()
            if line.strip()]


def feature_record(cache: LatentCache, j: int, model_id: str, source: str, *, model: Model | None = None,
                   decoder: torch.Tensor | None = None, k_logits: int = 10, created: str = "",
                   hook_name: str | None = None) -> dict:
    """One Neuronpedia ``Feature``: max activation, density, histogram, promoted / suppressed tokens (with a model
    and a residual-width decoder) and nearest features by decoder cosine."""
    from actlab.explain.effects import nearest_features, promoted_tokens

    edges = cache.hist_edges.double()
    pos_str: list[str] = []
    pos_values: list[float] = []
    neg_str: list[str] = []
    neg_values: list[float] = []
    if model is not None and decoder is not None and decoder.shape[1] == model.adapter.d_model:
        p = promoted_tokens(model, decoder[j], k_logits)
        pos_str, pos_values, neg_str, neg_values = p.top_tokens, p.top_values, p.bottom_tokens, p.bottom_values
    near = nearest_features(decoder, j, 10) if decoder is not None and decoder.shape[0] > 1 else []
    rec = dict.fromkeys(FEATURE_FIELDS)
    rec.update(modelId=model_id, layer=source, index=str(j), creatorId=CREATOR, createdAt=created,
               maxActApprox=float(cache.max[j]), hasVector=False, vector=[], vectorDefaultSteerStrength=10,
               hookName=hook_name, topkCosSimIndices=[i for i, _ in near], topkCosSimValues=[c for _, c in near],
               neg_str=neg_str, neg_values=neg_values, pos_str=pos_str, pos_values=pos_values,
               frac_nonzero=float(cache.density[j]), freq_hist_data_bar_heights=cache.hist[j].double().tolist(),
               freq_hist_data_bar_values=(edges[:-1] * edges[1:]).sqrt().tolist(),
               logits_hist_data_bar_heights=[], logits_hist_data_bar_values=[], decoder_weights_dist=[],
               sourceSetName=source.split("-", 1)[1] if "-" in source else source)
    for k in ("neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
              "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
              "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1"):
        rec[k] = []
    return rec


def activation_records(cache: LatentCache, j: int, tokenizer, model_id: str, source: str, n: int = 20,
                       created: str = "", ctx_len: int = 32) -> list[dict]:
    """Neuronpedia ``Activation`` records of latent ``j``'s top ``n`` windows: per-token strings and values."""
    out = []
    for x in activating_windows(cache, j, ExampleConfig(ctx_len=ctx_len, after=min(8, ctx_len - 1)), limit=n):
        pieces, _ = token_pieces(tokenizer, x.tokens)
        vals = [float(v) for v in x.acts]
        top = max(range(len(vals)), key=vals.__getitem__)
        rec = dict.fromkeys(ACTIVATION_FIELDS)
        rec.update(id=_id(model_id, source, j, x.start), tokens=pieces, index=str(j), layer=source,
                   modelId=model_id, maxValue=vals[top], maxValueTokenIndex=top, minValue=min(vals), values=vals,
                   creatorId=CREATOR, dataSource="actlab-cache", dataIndex=str(x.start), dfaValues=[],
                   createdAt=created, lossValues=[])
        out.append(rec)
    return out


def explanation_record(e: Explanation, model_id: str, source: str, created: str = "") -> dict:
    rec = dict.fromkeys(EXPLANATION_FIELDS)
    rec.update(id=_id(model_id, source, e.latent, e.text, e.explainer), modelId=model_id, layer=source,
               index=str(e.latent), description=e.text, authorId=CREATOR, typeName="actlab-autointerp",
               explanationModelName=e.explainer, createdAt=created)
    return rec


def score_record(r: ScoreResult, explanation_id: str, judge: str, created: str = "") -> dict:
    details = {k: getattr(r, k) for k in ("balanced_accuracy", "precision", "recall", "f1", "auroc",
                                          "per_quantile", "n_activating", "n_non_activating", "settings")}
    return {"id": _id(explanation_id, r.scorer, r.value), "initiatedByUserId": CREATOR, "value": r.value,
            "explanationId": explanation_id, "explanationScoreTypeName": r.scorer,
            "explanationScoreModelName": judge, "jsonDetails": json.dumps(details, default=str),
            "createdAt": created}


def export_neuronpedia(cache: LatentCache, out: str | Path, *, model_id: str, source: str, tokenizer,
                       latents: Sequence[int] | None = None, explanations: Sequence[Explanation] = (),
                       scores: Sequence[ScoreResult] = (), judge: str = "", model: Model | None = None,
                       decoder: torch.Tensor | None = None, n_activations: int = 20,
                       hook_name: str | None = None) -> Path:
    """Write features (``latents``, default: those explained, else every latent that fires) with their top
    activations, explanations and scores under ``out/<model_id>/<source>/``. Returns that folder."""
    if not model_id or "/" in model_id or not source or "/" in source:
        raise ValueError(f"model_id and source must be non-empty names without '/'; got {model_id!r}, {source!r}")
    if latents is None:
        latents = sorted({e.latent for e in explanations}) or (cache.count > 0).nonzero().squeeze(1).tolist()
    created = datetime.now(UTC).isoformat()
    folder = Path(out) / model_id / source
    feats = [feature_record(cache, j, model_id, source, model=model, decoder=decoder, created=created,
                            hook_name=hook_name) for j in latents]
    acts = [a for j in latents for a in activation_records(cache, j, tokenizer, model_id, source, n_activations,
                                                           created)]
    exps = [explanation_record(e, model_id, source, created) for e in explanations]
    by_latent = {int(r["index"]): r["id"] for r in exps}
    sc = [score_record(r, by_latent[r.latent], judge, created) for r in scores if r.latent in by_latent]
    _write(folder / "features" / "batch-0.jsonl.gz", feats)
    _write(folder / "activations" / "batch-0.jsonl.gz", acts)
    _write(folder / "explanations" / "batch-0.jsonl.gz", exps)
    _write(folder / "explanation_scores" / "batch-0.jsonl.gz", sc)
    return folder
