"""``actlab attribute ig|grad``: token attributions of a language model's answer, printed as a coloured heat map.

Writes ``attribution.json`` + ``attribution.safetensors`` + ``tokens.html`` with ``--out``.
"""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundled name (smollm2-135m-instruct, tiny-llama, ...), HF folder or .gguf")
    p.add_argument("--dtype", default="fp32", help="model dtype (default fp32)")
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--text", required=True, help="the prompt to attribute")
    p.add_argument("--target", required=True, help="answer token whose logit is attributed (first token used)")
    p.add_argument("--contrast", default=None,
                   help="optional second answer: attribute log p(target) - log p(contrast) instead")
    p.add_argument("--out", default=None, help="output folder (default: print only)")


def register(sub) -> None:
    p = sub.add_parser("attribute", help="input attributions: integrated gradients, gradient x input, SmoothGrad",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ig = verbs.add_parser("ig", help="integrated gradients over token embeddings (completeness delta reported)")
    _common(ig)
    ig.add_argument("--baseline", default="eos",
                    help="zero, pad, unk, mask, eos or a token id (default eos; zero is singular for RMSNorm models)")
    ig.add_argument("--steps", type=int, default=64, help="interpolation points (default 64)")
    ig.add_argument("--rule", default="gausslegendre", choices=["gausslegendre", "trapezoid", "riemann_right"],
                    help="quadrature rule")
    ig.set_defaults(func=cmd, kind="ig")
    g = verbs.add_parser("grad", help="gradient x input, saliency or SmoothGrad")
    _common(g)
    g.add_argument("--method", default="grad_x_input", choices=["grad_x_input", "saliency", "smoothgrad"],
                   help="attribution method (default grad_x_input)")
    g.add_argument("--samples", type=int, default=32, help="SmoothGrad noise samples")
    g.add_argument("--noise", type=float, default=0.1, help="SmoothGrad noise level (fraction of the input range)")
    g.set_defaults(func=cmd, kind="grad")  # not `method`: that would override --method's default


def _answer_id(m, text: str) -> int:
    ids = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SystemExit(f"error: answer {text!r} tokenizes to nothing")
    return ids[0]


def cmd(a) -> None:
    from actlab import load_model
    from actlab.attribute import contrastive_target, gradient_attribution, integrated_gradients, logit_target

    m = load_model(a.model, dtype=a.dtype, device=a.device)
    t = _answer_id(m, a.target)
    target = contrastive_target(t, _answer_id(m, a.contrast)) if a.contrast else logit_target(t)
    try:
        if a.kind == "ig":
            baseline = int(a.baseline) if a.baseline.isdigit() else a.baseline
            r = integrated_gradients(m, a.text, target, baseline=baseline, steps=a.steps, rule=a.rule)
            print(f"f(x) {r.f_x:.4f}  f(baseline) {r.f_baseline:.4f}  sum of attributions "
                  f"{float(r.attr.sum()):.4f}  completeness delta {r.delta:.3g}")
        else:
            r = gradient_attribution(m, a.text, target, method=a.method, n_samples=a.samples, noise=a.noise)
            print(f"f(x) {r.f_x:.4f}  method {r.method}")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(r.to_terminal())
    for tok, s in zip(r.tokens, r.scores.tolist()):
        print(f"  {tok!r:>12} {s:+.4f}")
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}/attribution.json, attribution.safetensors, tokens.html")
