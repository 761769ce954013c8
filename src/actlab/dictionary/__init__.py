"""Dictionary learning: SAEs (TopK, BatchTopK, JumpReLU, ReLU-L1, gated, gradient-aware), transcoders,
codebooks, semi-NMF and the local interaction basis; a fast trainer, evaluation and SAELens/sparsify formats."""
from actlab.dictionary.base import ARCHS, DictConfig, Dictionary, build, describe, load
from actlab.dictionary import batchtopk, gated, gsae, jumprelu, relu, topk  # noqa: F401  (register archs)
from actlab.dictionary.codebook import CodebookLayer
from actlab.dictionary.data import model_source, site_width, store_source, tensor_source
from actlab.dictionary.evaluate import (EvalResult, SpliceResult, density_histogram, evaluate, splice_ce,
                                        splice_positions)
from actlab.dictionary.formats import export_saelens, export_sparsify, load_foreign
from actlab.dictionary.hooknames import to_site, to_sparsify, to_transformerlens
from actlab.dictionary.lib import LIBLayer, interaction_graph, lib
from actlab.dictionary.snmf import SNMFResult, snmf
from actlab.dictionary.synthetic import mmcs, planted, planted_mlp, planted_quiet, recovered
from actlab.dictionary.top import render, store_tokenizer, top_examples
from actlab.dictionary.trainer import TrainConfig, Trainer, train
from actlab.dictionary.run import eval_report, site_source, train_sites

__all__ = ["ARCHS", "DictConfig", "Dictionary", "build", "load", "Trainer", "TrainConfig", "train",
           "store_source", "model_source", "tensor_source", "site_width", "evaluate", "splice_ce", "splice_positions",
           "density_histogram", "EvalResult", "SpliceResult", "export_saelens", "export_sparsify", "load_foreign",
           "to_site", "to_sparsify", "to_transformerlens", "CodebookLayer", "snmf", "SNMFResult", "lib", "LIBLayer",
           "interaction_graph", "planted", "planted_mlp", "planted_quiet", "mmcs", "recovered", "top_examples",
           "render", "store_tokenizer", "describe", "eval_report", "site_source", "train_sites"]
