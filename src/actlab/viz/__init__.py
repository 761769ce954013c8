"""Feature visualization and attribution evaluation for vision models (and soft prompts for text models)."""
from actlab.viz.vision import (
                               ARCHS,
                               PatchViT,
                               VisionConfig,
                               accuracy,
                               cache_dir,
                               conv_sites,
                               digits_cnn,
                               digits_model,
                               fit_classifier,
                               vision_model,
)

__all__ = ["ARCHS", "PatchViT", "VisionConfig", "accuracy", "cache_dir", "conv_sites", "digits_cnn", "digits_model",
           "fit_classifier", "vision_model"]
