"""Dictionary learning: SAEs (TopK, BatchTopK, JumpReLU, ReLU-L1, gated, gradient-aware), transcoders,
codebooks, semi-NMF and the local interaction basis; a fast trainer, evaluation and SAELens/sparsify formats."""
from actlab.dictionary import batchtopk, gated, gsae, jumprelu, relu, topk  # noqa: F401  (register archs)
from actlab.dictionary.base import ARCHS, DictConfig, Dictionary, build, describe, load
from actlab.dictionary.codebook import CodebookLayer
from actlab.dictionary.codebook_model import (
    FSM,
    CodebookTrainConfig,
    JointResult,
    fine_tune,
    forcing,
    load_codebook,
    purity,
    save_codebook,
    splice,
    train_joint,
)
from actlab.dictionary.data import model_source, site_width, store_source, tensor_source
from actlab.dictionary.evaluate import (
    EvalResult,
    SpliceResult,
    density_histogram,
    evaluate,
    splice_ce,
    splice_positions,
)
from actlab.dictionary.formats import export_saelens, export_sparsify, load_foreign
from actlab.dictionary.hooknames import to_site, to_sparsify, to_transformerlens
from actlab.dictionary.lib import LIBLayer, interaction_graph, lib
from actlab.dictionary.run import eval_report, site_source, train_sites
from actlab.dictionary.snmf import SNMFResult, snmf
from actlab.dictionary.snmf_model import SNMFConfig, SNMFFeatures, mlp_activations
from actlab.dictionary.snmf_model import fit as snmf_fit
from actlab.dictionary.synthetic import mmcs, planted, planted_mlp, planted_quiet, recovered
from actlab.dictionary.top import render, store_tokenizer, top_examples
from actlab.dictionary.trainer import TrainConfig, Trainer, train

__all__ = ["ARCHS", "FSM", "CodebookLayer", "CodebookTrainConfig", "DictConfig", "Dictionary", "EvalResult",
           "JointResult", "LIBLayer", "SNMFConfig", "SNMFFeatures", "SNMFResult", "SpliceResult",
           "TrainConfig", "Trainer", "build", "density_histogram", "describe", "eval_report", "evaluate",
           "export_saelens", "export_sparsify", "fine_tune", "forcing", "interaction_graph", "lib", "load",
           "load_codebook", "load_foreign", "mlp_activations", "mmcs", "model_source", "planted",
           "planted_mlp", "planted_quiet", "purity", "recovered", "render", "save_codebook", "site_source",
           "site_width", "snmf", "snmf_fit", "splice", "splice_ce", "splice_positions", "store_source",
           "store_tokenizer", "tensor_source", "to_site", "to_sparsify", "to_transformerlens",
           "top_examples", "train", "train_joint", "train_sites"]
