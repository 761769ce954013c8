"""The capture/intervention core: hook engine, recordings (with gradients), interventions, position selectors,
serialization."""
from actlab.core.threads import passive_wait_policy as _passive_wait_policy

_passive_wait_policy()   # the actlab CLI only, and only before torch loads OpenMP (the first import below)

from actlab.core.hooks import Ctx, Handler, HookEngine, StopForward
from actlab.core.interventions import (
                                       OPS,
                                       Ablate,
                                       Add,
                                       Clamp,
                                       Fn,
                                       FromSite,
                                       Intervention,
                                       Patch,
                                       Replace,
                                       Scale,
                                       Schedule,
                                       Scheduled,
                                       bind,
                                       check_grad_mode,
                                       check_tensor,
                                       is_zero,
                                       register_op,
                                       require_finite,
                                       row_alpha,
)
from actlab.core.positions import (
                                       POSITIONS_HELP,
                                       PassInfo,
                                       Positions,
                                       PositionSpec,
                                       context_position_mask,
                                       parse_positions,
                                       position_ids_from_mask,
                                       select_mask,
                                       selects_all,
)
from actlab.core.recording import Recording, take_positions
from actlab.core.serialize import load_interventions, normalize_mapping, save_interventions
from actlab.core.threads import passive_wait_policy, set_threads, threads_for

__all__ = ["Ctx", "Handler", "HookEngine", "StopForward", "Recording", "take_positions", "Positions",
           "position_ids_from_mask", "OPS", "Ablate", "Add", "Clamp", "Fn", "Intervention", "Patch", "Replace",
           "Scale", "check_tensor", "is_zero", "register_op", "require_finite", "row_alpha", "normalize_mapping",
           "PassInfo", "select_mask", "selects_all", "parse_positions", "context_position_mask", "POSITIONS_HELP",
           "PositionSpec", "load_interventions", "save_interventions", "FromSite", "Schedule", "Scheduled", "bind",
           "check_grad_mode", "passive_wait_policy", "set_threads", "threads_for"]
