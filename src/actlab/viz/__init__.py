"""Feature visualization and attribution evaluation for vision models (and soft prompts for text models):
trained digits models, activation maximisation, multifaceted visualization, most discriminative stimuli, DiffROAR /
BlockMNIST, COMET-style comprehensive attribution, background activation suppression, level set traversal."""
from actlab.viz.bas import bas_localize, bas_loss, best_box, box_mask, grad_cam
from actlab.viz.bas_generator import BASConfig, BASGenerator, box_iou, planted_digits, train_bas_generator
from actlab.viz.comet import Comet, CometConfig, cue_coverage, train_comet, two_cue_data
from actlab.viz.facets import Facets, FacetsConfig, cluster_codes, multifaceted, top_activating
from actlab.viz.gallery import image_grid, save_grid, write_gallery
from actlab.viz.maximize import MaximizeConfig, MaxResult, maximize, plain_ascent
from actlab.viz.mds import MDSConfig, MDSResult, channel_responses, mds_cluster
from actlab.viz.objectives import Unit, class_logits, objective, read_site
from actlab.viz.param import ImageParam, total_variation
from actlab.viz.roar import (
                             Dataset,
                             RoarResult,
                             attribution_scores,
                             block_digits,
                             diffroar,
                             keep_mask,
                             random_signal_data,
                             signal_mass,
)
from actlab.viz.text import SoftPrompt, nearest_tokens, soft_prompt
from actlab.viz.traverse import (
                             Traversal,
                             TraverseConfig,
                             class_confidence,
                             level_set_traverse,
                             line_confidence,
)
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

__all__ = [
                             "ARCHS",
                             "BASConfig",
                             "BASGenerator",
                             "Comet",
                             "CometConfig",
                             "Dataset",
                             "Facets",
                             "FacetsConfig",
                             "ImageParam",
                             "MDSConfig",
                             "MDSResult",
                             "MaxResult",
                             "MaximizeConfig",
                             "PatchViT",
                             "RoarResult",
                             "SoftPrompt",
                             "Traversal",
                             "TraverseConfig",
                             "Unit",
                             "VisionConfig",
                             "accuracy",
                             "attribution_scores",
                             "bas_localize",
                             "bas_loss",
                             "best_box",
                             "block_digits",
                             "box_iou",
                             "box_mask",
                             "cache_dir",
                             "channel_responses",
                             "class_confidence",
                             "class_logits",
                             "cluster_codes",
                             "conv_sites",
                             "cue_coverage",
                             "diffroar",
                             "digits_cnn",
                             "digits_model",
                             "fit_classifier",
                             "grad_cam",
                             "image_grid",
                             "keep_mask",
                             "level_set_traverse",
    "line_confidence",
                             "maximize",
                             "mds_cluster",
                             "multifaceted",
                             "nearest_tokens",
                             "objective",
                             "plain_ascent",
                             "planted_digits",
                             "random_signal_data",
                             "read_site",
                             "save_grid",
                             "signal_mass",
                             "soft_prompt",
                             "top_activating",
                             "total_variation",
                             "train_bas_generator",
                             "train_comet",
                             "two_cue_data",
                             "vision_model",
                             "write_gallery",
]
