"""Input attribution: integrated gradients, gradient x input / saliency / SmoothGrad, and layer masking for CNNs."""
from actlab.attribute.common import (Attribution, class_target, completeness_report, contrastive_target,
                                     logit_target)
from actlab.attribute.gradients import gradient_attribution
from actlab.attribute.integrated_gradients import integrated_gradients, quadrature
from actlab.attribute.layer_masking import LayerMaskConfig, MaskTrace, fill_mask, layer_masked_forward
from actlab.attribute.lime import compare_masking, grid_segments, lime_attribution, masked_predictor, rank_agreement

__all__ = ["Attribution", "completeness_report", "class_target", "contrastive_target", "logit_target",
           "gradient_attribution", "integrated_gradients", "quadrature", "LayerMaskConfig", "MaskTrace", "fill_mask",
           "layer_masked_forward", "compare_masking", "grid_segments", "lime_attribution", "masked_predictor",
           "rank_agreement"]
