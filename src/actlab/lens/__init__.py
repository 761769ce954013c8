"""Lenses: logit lens and tuned lens (read any residual site out through the final norm and unembedding), direct
logit attribution (exact per-component split of a logit with the final norm's scale frozen), and attention-output
SAE attribution (head shares of each latent, direct feature attribution to source tokens). Everything
docs/lens.md uses is importable from here."""
from actlab.lens.attn_sae import DFAResult, direct_feature_attribution, head_attribution
from actlab.lens.dla import DLAResult, direct_logit_attribution
from actlab.lens.logit_lens import LensResult, kl_final_lens, logit_lens, rank_of, resid_sites
from actlab.lens.plots import plot_dla, plot_lens
from actlab.lens.readout import FrozenNorm, frozen_norm, readout
from actlab.lens.tuned import TunedLens, TunedLensConfig, train_tuned_lens

__all__ = ["DFAResult", "DLAResult", "FrozenNorm", "LensResult", "TunedLens", "TunedLensConfig",
           "direct_feature_attribution", "direct_logit_attribution", "frozen_norm", "head_attribution",
           "kl_final_lens", "logit_lens", "plot_dla", "plot_lens", "rank_of", "readout", "resid_sites",
           "train_tuned_lens"]
