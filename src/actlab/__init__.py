"""actlab: record, measure, decompose, explain and intervene on the hidden activations of neural networks."""
from actlab.core import (Ablate, Add, Clamp, Fn, Intervention, Patch, Replace, Scale, load_interventions,
                         save_interventions)
from actlab.models import Model, load_model, wrap

__version__ = "0.1.0"
__all__ = ["load_model", "wrap", "Model", "Add", "Ablate", "Replace", "Clamp", "Scale", "Patch", "Fn",
           "Intervention", "save_interventions", "load_interventions"]
