"""Codebook fine-tuning keeps a trained model's held-out loss within the tolerance (spec §4: "modest degradation";
``LOSS_TOLERANCE`` = 10 percent): tiny-llama first learns random walks of a finite-state machine (loss well below
uniform), then a k=1 codebook at blocks.0.resid_post is initialised by k-means of that site's activations and trained
alone (model frozen). Random codes put the model far outside the tolerance (measured 3.04 vs 1.70); the k-means
codebook is inside it (1.706)."""
import random

import torch

from actlab.dictionary.codebook_model import FSM, LOSS_TOLERANCE, CodebookTrainConfig, fine_tune, train_joint
from actlab.models.tiny import tiny_model

SITE = "blocks.0.resid_post"


def test_kmeans_codebook_stays_within_tolerance(one_thread):
    torch.manual_seed(0)
    rng = random.Random(0)
    fsm = FSM(10, 3, seed=0)
    m = tiny_model("tiny-llama")
    batches = [m.tokenize([fsm.text(fsm.walk(24, rng)) for _ in range(16)])["input_ids"] for _ in range(80)]
    train_joint(m, SITE, batches, lr=1e-2, bypass=True, n_codes=2, k=1)     # the model alone learns the walks
    texts = [fsm.text(fsm.walk(40, rng)) for _ in range(120)]
    cfg = CodebookTrainConfig(site=SITE, codes=32, k=1, steps=10, batch_size=8, context_length=24, eval_contexts=16,
                              init_contexts=48, code_lr=3e-3)
    _, rep = fine_tune(m, texts, cfg)
    before = rep["loss_original"]
    assert before < 2.30, rep          # learned the walks (uniform over 10 states: ln 10 = 2.30; measured 1.70)
    assert rep["loss_codebook_random"] > (1 + LOSS_TOLERANCE) * before, rep    # random codes: far outside
    assert rep["loss_codebook_trained"] <= (1 + LOSS_TOLERANCE) * before, rep  # spec tolerance
    assert rep["within_tolerance"] and rep["loss_codebook_trained"] <= rep["loss_codebook_untrained"] + 0.02, rep
    assert not any(p.requires_grad for p in m.module.parameters())              # only the codebook trained
