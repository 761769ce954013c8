"""TIJO and InverTune over fixture seeds: is the planted ground truth recovered on every seed, and is the clean twin
left alone? Wall time per method in the same run.

  python bench/security_invert.py [--seeds 3 --cache DIR --json out.json]

Per seed: the dual-key VQA toy and its clean twin -> TIJO (400 clean pairs, defaults); the CLIP-like toy and its
clean twin -> InverTune (216 held-out clean images, defaults). Fixtures are cached in --cache (default: a temp dir).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from actlab.security import (
        ClipConfig,
        DualKeyConfig,
        additive_rate,
        clip_backdoor,
        dualkey_fixture,
        invertune,
        tijo,
    )

    torch.set_num_threads(1)
    cache = a.cache or tempfile.mkdtemp(prefix="security_invert_")
    rows = []
    for seed in range(a.seeds):
        row: dict = {"seed": seed}
        for clean in (False, True):
            fx = dualkey_fixture(DualKeyConfig(poison_fraction=0.0 if clean else 0.1, seed=seed), cache=cache)
            t0 = time.perf_counter()
            r = tijo(fx.model, fx.x_train[:400], fx.q_train[:400], 10,
                     held_out=(fx.x_test, fx.q_test, fx.a_test))
            key = "tijo_clean" if clean else "tijo"
            row[key] = {"target": r.target, "token": r.best.token, "anomaly_index": r.anomaly_index,
                        "flagged": r.flagged, "min_loss": min(r.losses), "asr_inverted": r.asr.value if r.asr else None,
                        "fixture": {k: v.value for k, v in fx.metrics.items()}, "seconds": time.perf_counter() - t0}
        for clean in (False, True):
            fx = clip_backdoor(ClipConfig(poison_fraction=0.0 if clean else 0.1, seed=seed), cache=cache)
            t0 = time.perf_counter()
            r = invertune(fx.encoder, fx.text, fx.x_val)
            t = r.estimate.target
            key = "invertune_clean" if clean else "invertune"
            row[key] = {"target": t, "anomaly_index": r.estimate.anomaly_index, "flagged": r.estimate.flagged,
                        "corner_share": float(r.delta[0, -2:, -2:].norm() / r.delta.norm().clamp_min(1e-12)),
                        "trigger_asr": additive_rate(fx.encoder, fx.text, fx.x_test, fx.y_test, r.delta, t).value,
                        "ca": [fx.ca().value, fx.ca(r.encoder).value],
                        "asr_planted": [fx.asr().value, fx.asr(r.encoder).value],
                        "seconds": time.perf_counter() - t0}
        rows.append(row)
        tj, tc, it, ic = row["tijo"], row["tijo_clean"], row["invertune"], row["invertune_clean"]
        print(f"seed {seed}: TIJO target {tj['target']} word {tj['token']} AI {tj['anomaly_index']:.1f} flagged "
              f"{tj['flagged']} ASR {tj['asr_inverted']:.3f} ({tj['seconds']:.1f}s) | clean twin AI "
              f"{tc['anomaly_index']:.1f} flagged {tc['flagged']}")
        print(f"        InverTune target {it['target']} AI {it['anomaly_index']:.1f} flagged {it['flagged']} corner "
              f"{it['corner_share']:.2f} CA {it['ca'][0]:.3f}->{it['ca'][1]:.3f} ASR {it['asr_planted'][0]:.3f}->"
              f"{it['asr_planted'][1]:.3f} ({it['seconds']:.1f}s) | clean twin AI {ic['anomaly_index']:.1f} "
              f"flagged {ic['flagged']}")
    ok_t = sum(r["tijo"]["flagged"] and r["tijo"]["target"] == 3 and r["tijo"]["token"] == 7 for r in rows)
    ok_i = sum(r["invertune"]["flagged"] and r["invertune"]["target"] == 3 and r["invertune"]["asr_planted"][1] < 0.1
               for r in rows)
    fp = sum(r["tijo_clean"]["flagged"] for r in rows) + sum(r["invertune_clean"]["flagged"] for r in rows)
    print(f"TIJO recovered target+word on {ok_t}/{len(rows)} seeds; InverTune found the target and removed the "
          f"backdoor (ASR < 0.1) on {ok_i}/{len(rows)}; clean twins flagged {fp}/{2 * len(rows)}")
    population_auc(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def population_auc(rows: list[dict]) -> None:
    """TIJO's model-level classifier (spec step 3): logistic regression on (lowest inversion loss, anomaly index)
    over the population of backdoored models and clean twins, AUC under leave-one-out; and the AUC of the lowest
    loss alone (lower = backdoored)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X = [[r[k]["min_loss"], r[k]["anomaly_index"]] for r in rows for k in ("tijo", "tijo_clean")]
    y = [1, 0] * len(rows)
    if len(rows) < 2:
        print("population AUC needs >= 2 seeds")
        return
    loo = []
    for i in range(len(X)):
        clf = LogisticRegression().fit([x for j, x in enumerate(X) if j != i], [v for j, v in enumerate(y) if j != i])
        loo.append(float(clf.predict_proba([X[i]])[0, 1]))
    print(f"TIJO model population ({sum(y)} backdoored, {len(y) - sum(y)} clean): logistic regression on "
          f"(lowest loss, anomaly index) leave-one-out AUC {roc_auc_score(y, loo):.3f}; lowest loss alone AUC "
          f"{roc_auc_score(y, [-x[0] for x in X]):.3f}")


if __name__ == "__main__":
    main()
