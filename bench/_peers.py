"""Shared pieces of the SAE benchmarks (``sae_train.py``, ``sae_quality.py``): the synthetic activation bank and the
wrapper that lets sparsify (which trains on a model's hooked outputs) read that bank.

Imported by the scripts as ``from _peers import ...`` (``python bench/<script>.py`` puts ``bench/`` on the path).
"""
from __future__ import annotations

import torch


def bank(n_rows: int, d: int, seed: int = 0, n_true: int = 4096) -> torch.Tensor:
    """Sparse non-negative mixtures of a random unit dictionary (32 atoms of ``n_true`` per row) + noise + a mean."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_true, d, generator=g), dim=1)
    idx = torch.randint(0, n_true, (n_rows, 32), generator=g)
    w = torch.rand(n_rows, 32, generator=g) * 4
    x = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=w, mode="sum")
    return x + 0.1 * torch.randn(n_rows, d, generator=g) + torch.randn(d, generator=g)


def sparsify_bank_model(rows: torch.Tensor):
    """A transformers model whose one layer ``layers.0`` outputs row ``i`` of ``rows`` for token id ``i``: sparsify's
    ``Trainer`` hooks ``layers.0`` and so trains on the bank, rows in the order of the dataset's token ids."""
    from transformers import PretrainedConfig, PreTrainedModel

    class BankConfig(PretrainedConfig):
        model_type = "actlab_bench_bank"

    class Bank(PreTrainedModel):
        config_class = BankConfig
        base_model_prefix = ""

        def __init__(self, cfg, rows):
            super().__init__(cfg)
            self.bank = torch.nn.Embedding.from_pretrained(rows, freeze=True)
            self.layers = torch.nn.ModuleList([torch.nn.Identity()])

        def forward(self, input_ids, **_):
            return self.layers[0](self.bank(input_ids))

        @property
        def dummy_inputs(self):
            return {"input_ids": torch.arange(4)[None]}

    return Bank(BankConfig(num_hidden_layers=1), rows)


def row_dataset(row_ids: torch.Tensor, seq: int):
    """A ``datasets.Dataset`` of ``input_ids`` sequences of ``seq`` token ids (= bank rows) in the given order."""
    from datasets import Dataset
    return Dataset.from_dict({"input_ids": row_ids.reshape(-1, seq).tolist()}).with_format("torch")
