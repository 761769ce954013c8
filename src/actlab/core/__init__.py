"""The capture/intervention core: hook engine, interventions, position selectors, serialization."""
from actlab.core.hooks import Ctx, HookEngine, StopForward
from actlab.core.interventions import (OPS, Ablate, Add, Clamp, Fn, Intervention, Patch, Replace, Scale,
                                       check_tensor, register_op)
from actlab.core.positions import PassInfo, select_mask
from actlab.core.serialize import load_interventions, save_interventions

__all__ = ["Ctx", "HookEngine", "StopForward", "OPS", "Ablate", "Add", "Clamp", "Fn", "Intervention", "Patch",
           "Replace", "Scale", "check_tensor", "register_op", "PassInfo", "select_mask", "load_interventions",
           "save_interventions"]
