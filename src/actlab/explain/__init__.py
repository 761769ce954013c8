"""Explain features: a sparse latent cache over a store or texts, activating / non-activating examples, logit
effects, and scorers of explanations (detection, fuzzing, embedding). Everything docs/explain.md uses is here."""
from actlab.explain.cache import CacheConfig, LatentCache, build_cache
from actlab.explain.sources import (Chunk, DictionaryLatents, DirectionLatents, NeuronLatents, StoreRows,
                                    TensorRows, TextRows)

__all__ = ["CacheConfig", "Chunk", "DictionaryLatents", "DirectionLatents", "LatentCache", "NeuronLatents",
           "StoreRows", "TensorRows", "TextRows", "build_cache"]
