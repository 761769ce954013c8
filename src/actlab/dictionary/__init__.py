"""Dictionary learning: SAEs (TopK, BatchTopK, JumpReLU, ReLU-L1, gated, gradient-aware), transcoders,
codebooks, semi-NMF and the local interaction basis; a fast trainer, evaluation and SAELens/sparsify formats."""
from actlab.dictionary.base import ARCHS, DictConfig, Dictionary, build, load
from actlab.dictionary import batchtopk, gated, gsae, jumprelu, relu, topk  # noqa: F401  (register archs)

__all__ = ["ARCHS", "DictConfig", "Dictionary", "build", "load"]
