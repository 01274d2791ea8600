"""Why DenseHybrid's hybrid does or does not beat its parts on DigitScenes.

Reads the models `examples/quickstart.py` saved (`--quickstart DIR`) and:

1. *Eq. 4 of the paper.* Standardises each part of the hybrid score over
   the valid pixels of a set (`s' = (s − mean) / std`), reads the errors
   `ε = s' − f` against `f = ±1` (anomaly = +1), and prints the paper's
   quantities: `ℰ = E[ε²]` of each part, `α = max ℰ / min ℰ`,
   `e = min ℰ`, `ρ = corr(ε_D, ε_G)`, `C1 = ½·std(ε_D)·std(ε_G)`,
   `C2 = ½·E[ε_D]·E[ε_G]`, and the condition
   `((α − 3)/4)·e + C1·ρ + C2`, negative when the equal-weight hybrid
   must have a smaller error than both parts (Eqs. 30-33). Also the AP of
   that standardised hybrid next to the raw one (Eq. 9 sums the
   unstandardised log-terms, assuming σ_D = σ_G, Eq. 37).
2. *Fine-tuning rate* (`--learning-rates`): fine-tunes the saved softmax
   model with real negatives at each rate, as the quick start does at 5e-4,
   and prints mIoU and the AP of the hybrid and its parts.

    python benchmarks/densehybrid_study.py --quickstart outputs/quickstart --record
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import keras_gss  # noqa: E402  (first: it keeps TensorFlow's C++ start-up log quiet)
import numpy as np  # noqa: E402

from common import markdown_table  # noqa: E402
from common import record  # noqa: E402
from keras_gss.metrics import anomaly_metrics  # noqa: E402
from quickstart import evaluate_model  # noqa: E402
from quickstart import finetune_with_negatives  # noqa: E402
from quickstart import load_data  # noqa: E402


def condition(discriminative, generative, anomaly):
    """The paper's Eq. 4 quantities for two scores of the same pixels."""
    f = np.where(anomaly, 1.0, -1.0)
    parts = []
    for score in (discriminative, generative):
        score = np.asarray(score, np.float64)
        parts.append((score - score.mean()) / score.std())
    errors = [p - f for p in parts]
    energies = [float(np.mean(e * e)) for e in errors]
    alpha, low = max(energies) / min(energies), min(energies)
    rho = float(np.corrcoef(errors[0], errors[1])[0, 1])
    c1 = 0.5 * errors[0].std() * errors[1].std()
    c2 = 0.5 * errors[0].mean() * errors[1].mean()
    hybrid = 0.5 * (parts[0] + parts[1])
    return {"E_D": energies[0], "E_G": energies[1], "E_H": float(np.mean((hybrid - f) ** 2)),
            "alpha": alpha, "e": low, "rho": rho, "C1": c1, "C2": c2,
            "condition": (alpha - 3) / 4 * low + c1 * rho + c2,
            "ap_standardised": anomaly_metrics(hybrid, anomaly)["ap"]}


def study_condition(quickstart, data):
    rows = []
    for name in ("densehybrid_real", "densehybrid_synthetic", "gmmseg_dp_real"):
        model = keras_gss.from_preset(os.path.join(quickstart, f"{name}_preset"))
        for set_name, (images, labels, mask) in data["anomaly_sets"].items():
            outputs = model.predict_outputs(images, verbose=0)
            valid = (labels != 255) | mask
            values = condition(outputs["discriminative_score"][valid],
                               outputs["generative_score"][valid], mask[valid])
            ap = {k: anomaly_metrics(outputs[k][valid], mask[valid])["ap"]
                  for k in ("anomaly_score", "discriminative_score", "generative_score")}
            rows.append([name, set_name] + [f"{values[k]:.3f}" for k in (
                "E_D", "E_G", "E_H", "alpha", "rho", "C1", "C2", "condition")]
                + [f"{100 * ap[k]:.1f}" for k in ("discriminative_score", "generative_score",
                                                   "anomaly_score")]
                + [f"{100 * values['ap_standardised']:.1f}"])
    return markdown_table(["model", "set", "ℰ(s_D)", "ℰ(s_G)", "ℰ(½s_D+½s_G)", "α", "ρ", "C1",
                           "C2", "Eq. 4 (< 0: hybrid wins)", "AP s_D", "AP s_G",
                           "AP hybrid (Eq. 9)", "AP standardised hybrid"], rows)


def study_learning_rate(quickstart, data, rates):
    closed = keras_gss.from_preset(os.path.join(quickstart, "softmax_preset"))
    rows = []
    for rate in rates:
        model, _ = finetune_with_negatives(closed, "real", data, verbose=0, learning_rate=rate)
        results = evaluate_model(model, data, f"lr {rate:g}")
        row = [f"{rate:g}", f"{100 * results['closed_set']['miou']:.1f}"]
        for set_name in ("near-OOD", "far-OOD"):
            row += [f"{100 * results[set_name][k]['ap']:.1f}"
                    for k in ("model:discriminative", "model:generative", "model")]
        rows.append(row)
    return markdown_table(["fine-tuning rate", "mIoU", "near AP s_D", "near AP s_G",
                           "near AP hybrid", "far AP s_D", "far AP s_G", "far AP hybrid"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quickstart", default="outputs/quickstart")
    parser.add_argument("--learning-rates", default="5e-5,5e-4")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    data = load_data()
    table = study_condition(args.quickstart, data)
    rates = [float(r) for r in args.learning_rates.split(",") if r]
    rate_table = study_learning_rate(args.quickstart, data, rates) if rates else ""
    notes = ("Eq. 4 on the quick start's seed-0 models, every valid pixel of each set; APs in %. "
             "Standardised hybrid: the mean of the two z-scored parts.\n\n" + rate_table)
    command = "python benchmarks/densehybrid_study.py " + " ".join(sys.argv[1:])
    if args.record:
        record("DenseHybrid on DigitScenes: the paper's Eq. 4 and the fine-tuning rate",
               command, table, notes)
    else:
        print(table + "\n\n" + notes)


if __name__ == "__main__":
    main()
