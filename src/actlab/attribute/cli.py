"""``actlab attribute ig|grad``: token attributions of a language model's answer, printed as a coloured heat map.

Writes ``attribution.json`` + ``attribution.safetensors`` + ``tokens.html`` with ``--out``. Integrated gradients
always prints its completeness (sum of attributions against f(x) - f(baseline)). This file only declares flags and
calls ``actlab.attribute``.
"""
from __future__ import annotations

import argparse

from actlab import clikit


def _common(p: argparse.ArgumentParser) -> None:
    clikit.add_model_args(p)
    p.add_argument("--text", required=True, help="the prompt to attribute")
    p.add_argument("--target", required=True, help="answer token whose logit is attributed (first token used)")
    p.add_argument("--contrast", default=None,
                   help="optional second answer: attribute log p(target) - log p(contrast) instead")
    p.add_argument("--out", default=None, help="output folder (default: print only)")


def register(sub) -> None:
    p = sub.add_parser("attribute", help="input attributions: integrated gradients, gradient x input, SmoothGrad",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = clikit.subcommands(p, dest="verb", metavar="VERB", required=True)
    ig = verbs.add_parser("ig", help="integrated gradients over token embeddings (completeness reported)")
    _common(ig)
    ig.add_argument("--baseline", default="eos",
                    help="zero, pad, unk, mask, eos or a token id (default eos; zero is singular for RMSNorm models)")
    ig.add_argument("--steps", type=int, default=16, help="interpolation intervals (adaptive: the starting grid; "
                                                           "default 16)")
    ig.add_argument("--rule", default="adaptive", choices=["adaptive", "gausslegendre", "trapezoid", "riemann_right"],
                    help="quadrature rule (default adaptive: refine where completeness fails)")
    ig.add_argument("--max-steps", type=int, default=512, help="adaptive rule: most gradient evaluations (default 512)")
    ig.add_argument("--tol", type=float, default=0.01,
                    help="adaptive rule: completeness tolerance, a fraction of |f(x) - f(baseline)| (default 0.01)")
    ig.add_argument("--move-first", action="store_true",
                    help="also interpolate the first token (default: it keeps its real embedding; moving a real "
                         "LM's attention sink breaks completeness)")
    ig.set_defaults(func=cmd, kind="ig")
    g = verbs.add_parser("grad", help="gradient x input, saliency or SmoothGrad")
    _common(g)
    g.add_argument("--method", default="grad_x_input", choices=["grad_x_input", "saliency", "smoothgrad"],
                   help="attribution method (default grad_x_input)")
    g.add_argument("--samples", type=int, default=32, help="SmoothGrad noise samples")
    g.add_argument("--noise", type=float, default=0.1, help="SmoothGrad noise level (fraction of the input range)")
    g.set_defaults(func=cmd, kind="grad")  # not `method`: that would override --method's default


def cmd(a) -> None:
    from actlab.attribute import contrastive_target, gradient_attribution, integrated_gradients, logit_target
    from actlab.patch import answer_id

    m = clikit.model_from_args(a)
    t, _ = answer_id(m, a.target)
    target = contrastive_target(t, answer_id(m, a.contrast)[0]) if a.contrast else logit_target(t)
    if a.kind == "ig":
        baseline = int(a.baseline) if a.baseline.isdigit() else a.baseline
        r = integrated_gradients(m, a.text, target, baseline=baseline, steps=a.steps, rule=a.rule,
                                 max_steps=a.max_steps, tol=a.tol, keep_first=not a.move_first)
        c = r.completeness
        evals = f", {r.meta['evaluations']} gradient evaluations" if "evaluations" in r.meta else ""
        print(f"f(x) {r.f_x:.4f}  f(baseline) {r.f_baseline:.4f}")
        print(f"completeness: sum of attributions {c['sum_attr']:.4f} vs f(x) - f(baseline) {c['f_diff']:.4f}: "
              f"delta {c['delta']:.3g} ({100 * c['relative_error']:.2f}%{evals})")
    else:
        r = gradient_attribution(m, a.text, target, method=a.method, n_samples=a.samples, noise=a.noise)
        print(f"f(x) {r.f_x:.4f}  method {r.method}")
    print(r.to_terminal())
    for tok, s in zip(r.tokens, r.scores.tolist()):
        print(f"  {tok!r:>12} {s:+.4f}")
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}/attribution.json, attribution.safetensors, tokens.html")
