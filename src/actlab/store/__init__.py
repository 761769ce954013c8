"""Activation store: sharded safetensors + JSON manifest on disk (FORMAT.md), the harvest that writes it (resumable,
torchrun-aware, writer thread), and the memory-mapped reader with a shuffled bounded-buffer batch iterator."""
from actlab.store.fingerprint import weights_fingerprint
from actlab.store.format import StoreCorruptError, StoreError
from actlab.store.estimate import HarvestEstimate, estimate_harvest, free_bytes, human_bytes, human_seconds
from actlab.store.harvest import HarvestConfig, harvest
from actlab.store.reader import ActivationStore

__all__ = ["ActivationStore", "HarvestConfig", "harvest", "StoreError", "StoreCorruptError", "weights_fingerprint",
           "HarvestEstimate", "estimate_harvest", "free_bytes", "human_bytes", "human_seconds"]
