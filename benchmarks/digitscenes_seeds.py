"""DigitScenes over seeds: mean ± std per metric for a list of configurations.

Each configuration is trained exactly as the quick start trains it (same
data, backbone, schedule and steps; `examples/quickstart.py`'s
`train_model`), once per seed, and evaluated on the test split and both
anomaly sets, pooled and by negative group (textures; known digits). At
`--checkpoints` evenly spaced steps it logs per-class IoU on the test split
and, for GMMSeg, every class's mean fitted σ and the memory entries written
so far (real writes: a random-filled memory starts full). Prints one
markdown table of mean ± std and, with `--record`, appends it to
`benchmarks/RESULTS.md`; every number also goes to `--out`/results.json.
`--resume` keeps the runs already there and trains only the missing ones.

    python benchmarks/digitscenes_seeds.py --configs softmax,gmmseg --seeds 0,1,2 --record
    python benchmarks/digitscenes_seeds.py --configs grid --seeds 0,1,2 --record

    python benchmarks/digitscenes_seeds.py --configs densehybrid --seeds 0,1,2 --record
    python benchmarks/digitscenes_seeds.py --configs lgmm --seeds 0,1,2 --record
    python benchmarks/digitscenes_seeds.py --configs gss --seeds 0,1,2 --record \
        --tokenizer outputs/gss_tokenizer/tokenizer

Configurations: `softmax`; `gmmseg` (the authors' configuration: class
LayerNorm on, random-filled memory, M-step over the step's classes); the
grid cells `gmmseg_norm-off_empty`, `gmmseg_norm-off_random`,
`gmmseg_norm-on_empty` (with `gmmseg`, `grid` names all four);
`gmmseg_starved-fallback`, the authors' configuration except that a class
none of whose pixels is classified correctly in a step writes its labelled
pixels to the memory (the lock-out test); and DenseHybrid's, each
fine-tuned from the same seed's trained closed-set model as the quick start
does (`finetune_with_negatives`): `densehybrid_real`,
`densehybrid_synthetic` and `gmmseg_dp_real` (GMMSeg with the same
dataset-posterior head; `densehybrid` names these three with their bases,
softmax and gmmseg); `lgmm` (L-GMM's segmenter at the paper's d = 128,
G = 3, 2000 embeddings per class; `lgmm_group` names it with softmax and
gmmseg); `gss_ff` (GSS-FF on the frozen tokenizer `--tokenizer`, trained
by `zoo/recipes/gss_tokenizer_natural_crops.json`) and `gss_ftw` (the same
prior with a learned windowed-attention `X⁻¹`; `gss` names both with
softmax). Runs go seed by seed, so a base trains once per seed.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import keras_gss  # noqa: E402  (first: it keeps TensorFlow's C++ start-up log quiet)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from common import RESULTS  # noqa: E402
from common import environment  # noqa: E402
from keras_gss.data import DigitScenes  # noqa: E402
from quickstart import FINETUNE_LEARNING_RATE  # noqa: E402
from quickstart import FINETUNE_STEPS  # noqa: E402
from quickstart import evaluate_model  # noqa: E402
from quickstart import finetune_with_negatives  # noqa: E402
from quickstart import load_data  # noqa: E402
from quickstart import plot_gss  # noqa: E402
from quickstart import train_maskige_decoder  # noqa: E402
from quickstart import train_model  # noqa: E402

# Fine-tuned configurations: name -> (base configuration, negatives).
FINETUNED = {
    "densehybrid_real": ("softmax", "real"),
    "densehybrid_synthetic": ("softmax", "synthetic"),
    "gmmseg_dp_real": ("gmmseg", "real"),
}
DENSEHYBRID = ("softmax", "gmmseg", *FINETUNED)
CONFIGS = {
    **{name: ("finetuned", {}) for name in FINETUNED},
    "softmax": ("softmax", {}),
    "gmmseg": ("gmmseg", {}),
    "lgmm": ("lgmm", {}),
    "gss_ff": ("gss", {}),
    "gss_ftw": ("gss", {}),  # gss_ff's prior with a learned X⁻¹ (train_maskige_decoder)
    "gmmseg_norm-off_empty": ("gmmseg", {"class_norm": False, "memory_fill": "empty"}),
    "gmmseg_norm-off_random": ("gmmseg", {"class_norm": False, "memory_fill": "random"}),
    "gmmseg_norm-on_empty": ("gmmseg", {"class_norm": True, "memory_fill": "empty"}),
    # Ours, not the authors': a class with no correct pixel in a step writes its labelled ones.
    "gmmseg_starved-fallback": ("gmmseg", {"starved_fallback": True}),
}
LGMM = ("softmax", "gmmseg", "lgmm")
GSS = ("softmax", "gss_ff", "gss_ftw")
GRID = ("gmmseg", "gmmseg_norm-off_empty", "gmmseg_norm-off_random", "gmmseg_norm-on_empty")
SETS = ("near-OOD", "near-OOD/textures", "near-OOD/digits",
        "far-OOD", "far-OOD/textures", "far-OOD/digits")
OPEN_SETS = ("near-OOD", "far-OOD")
# Rows per kind: (score key, label).
SCORES = {
    "softmax": (("model", "MSP (own score)"), ("max_logit", "max logit"),
                ("energy", "energy −LSE(s)")),
    "gmmseg": (("model", "−max log p(x\\|c)"), ("max_softmax", "MSP")),
    "lgmm": (("model", "−max log p(z\\|y)"), ("max_softmax", "MSP")),
    "gss": (("model", "1 − max p(z\\|x) (ours)"), ("max_softmax", "MSP")),
    "finetuned": (("model", "hybrid"), ("model:discriminative", "ln P(d_out\\|x) alone"),
                  ("model:generative", "generative part alone")),
}


class CheckpointLog(keras.callbacks.Callback):
    """Per-class IoU, and GMMSeg's σ and memory writes, at given steps."""

    def __init__(self, steps, test):
        super().__init__()
        self.steps, self.test, self.rows = set(steps), test, []
        self.done, self.writes, self.pointer = 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        memory = getattr(self.model, "feature_memory", None)
        if memory is not None:
            # Each step advances a ring by at most samples_per_component < capacity.
            pointer = np.asarray(memory.pointer).astype(np.int64)
            if self.writes is None:
                self.writes, previous = np.zeros_like(pointer), np.zeros_like(pointer)
            else:
                previous = self.pointer
            self.writes += (pointer - previous) % memory.capacity
            self.pointer = pointer
        if self.done not in self.steps:
            return
        logits = self.model.predict(self.test[0], verbose=0)
        confusion = np.asarray(keras_gss.metrics.confusion_matrix(
            self.test[1], logits.argmax(-1), logits.shape[-1], 255))
        row = {"step": self.done, "iou": np.round(
            100 * keras_gss.metrics.iou_from_confusion(confusion), 1).tolist()}
        if memory is not None:
            row["sigma"] = np.round(np.asarray(self.model.gmm_head.scales).mean((1, 2)),
                                    3).tolist()
            row["writes"] = self.writes.sum(1).tolist()
        self.rows.append(row)


def summarise(runs):
    """`{metric: (mean, std)}` over runs' flattened metrics."""
    keys = runs[0].keys()
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
            for k in keys}


def flatten(results):
    flat = {"mIoU": 100 * results["closed_set"]["miou"]}
    for c, value in enumerate(results["closed_set"]["iou"]):
        flat[f"IoU {DigitScenes.class_names[c]}"] = 100 * value
    for s in SETS:
        for score, metrics in results[s].items():
            for metric, value in metrics.items():
                flat[f"{s} {score} {metric}"] = 100 * value
    return flat


def table(summaries, seeds):
    def cell(stat):
        return f"{stat[0]:.1f} ± {stat[1]:.1f}"

    columns = [(s, m) for s in SETS for m in ("auroc", "ap", "fpr95")
               + (("open_miou",) if s in OPEN_SETS else ())]
    names = {"auroc": "AUROC", "ap": "AP", "fpr95": "FPR95", "open_miou": "oIoU"}
    lines = [f"Mean ± std over seeds {seeds}.", "",
             "| config | mIoU | min class IoU | " + " | ".join(
                 f"{s} {names[m]}" for s, m in columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    for name, (stats, runs) in summaries.items():
        kind = CONFIGS[name][0]
        for score, label in SCORES["gmmseg" if kind == "gmmseg" else kind]:
            worst = [min(v for k, v in r.items() if k.startswith("IoU ")) for r in runs]
            row = [f"{name}: {label}", cell(stats["mIoU"]),
                   cell((float(np.mean(worst)), float(np.std(worst))))]
            row += [cell(stats[f"{s} {score} {m}"]) for s, m in columns]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per-class test IoU (%), mean ± std:", "",
              "| config | " + " | ".join(DigitScenes.class_names) + " |",
              "|" + "---|" * (1 + len(DigitScenes.class_names))]
    for name, (stats, _) in summaries.items():
        lines.append(f"| {name} | " + " | ".join(
            cell(stats[f"IoU {c}"]) for c in DigitScenes.class_names) + " |")
    return "\n".join(lines)


SETTINGS = ("steps", "finetune_steps", "finetune_learning_rate", "train_scenes", "test_scenes",
            "image_size", "decoder_steps")


def resumed_runs(args, names):
    """`{(name, seed): run}` of `--out`/results.json, checked to share this run's settings."""
    path = os.path.join(args.out, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        saved = json.load(file)
    changed = [k for k in SETTINGS if saved["args"].get(k) != getattr(args, k)]
    if changed:
        sys.exit(f"--resume: {path} was run with other settings ({', '.join(changed)}); "
                 "pass the same ones or another --out")
    return {(name, run["seed"]): run for name, kept in saved["runs"].items() if name in names
            for run in kept}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="softmax,gmmseg",
                        help=f"comma-separated names from {sorted(CONFIGS)}, 'grid', "
                             "'densehybrid' or 'lgmm_group'")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--finetune-steps", type=int, default=FINETUNE_STEPS)
    parser.add_argument("--finetune-learning-rate", type=float, default=FINETUNE_LEARNING_RATE)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--test-scenes", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--out", default="outputs/digitscenes_seeds")
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out/results.json (same settings) and "
                             "train only the missing configuration-seed pairs")
    parser.add_argument("--tokenizer", default="outputs/gss_tokenizer/tokenizer",
                        help="GSS's frozen tokenizer: a DiscreteVAE preset directory")
    parser.add_argument("--decoder-steps", type=int, default=500,
                        help="gss_ftw: steps of the learned X⁻¹ on predicted maskiges")
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    names = []
    for name in args.configs.split(","):
        group = {"grid": GRID, "densehybrid": DENSEHYBRID,
                 "lgmm_group": LGMM, "gss": GSS}.get(name, (name,))
        for expanded in group:
            if expanded not in CONFIGS:
                parser.error(f"unknown configuration {expanded!r}; choose from {sorted(CONFIGS)}")
            if expanded not in names:
                names.append(expanded)
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(CONFIGS[n][0] == "gss" for n in names) and not os.path.isdir(args.tokenizer):
        parser.error(f"--tokenizer {args.tokenizer!r} is not a directory; train one with "
                     "keras-gss train zoo/recipes/gss_tokenizer_natural_crops.json "
                     "--out outputs/gss_tokenizer")
    os.makedirs(args.out, exist_ok=True)
    data = load_data(args.image_size, args.train_scenes, args.test_scenes)
    checkpoints = [round(args.steps * (k + 1) / args.checkpoints) for k in range(args.checkpoints)]
    raw, runs, started = {}, {name: [] for name in names}, time.time()
    done = resumed_runs(args, names) if args.resume else {}
    for seed in seeds:
        trained = {}  # this seed's models, so a fine-tuned configuration reuses its base
        for name in names:
            kind, options = CONFIGS[name]
            if (name, seed) in done:
                raw.setdefault(name, []).append(done[name, seed])
                runs[name].append(flatten(done[name, seed]["results"]))
                print(f"kept {name} seed {seed} from {args.out}/results.json", flush=True)
                continue
            log = CheckpointLog(checkpoints if kind != "finetuned" else [], data["test"])
            if kind == "finetuned":
                base, negatives = FINETUNED[name]
                if base not in trained:
                    trained[base] = train_model(base, data, args.steps, seed=seed,
                                                verbose=0)[0]
                model, seconds = finetune_with_negatives(
                    trained[base], negatives, data, args.finetune_steps, seed=seed,
                    callbacks=[log], verbose=0, learning_rate=args.finetune_learning_rate)
            elif name == "gss_ftw":
                if "gss_ff" not in trained:
                    trained["gss_ff"] = train_model("gss", data, args.steps, seed=seed,
                                                    options={"tokenizer": args.tokenizer},
                                                    verbose=0)[0]
                model, seconds = train_maskige_decoder(trained["gss_ff"], data,
                                                       args.decoder_steps, seed=seed, verbose=0)
            else:
                if kind == "gss":
                    options = {**options, "tokenizer": args.tokenizer}
                model, seconds = train_model(kind, data, args.steps, seed=seed, options=options,
                                             callbacks=[log], verbose=0)
                if name in ("softmax", "gmmseg", "gss_ff"):
                    trained[name] = model
            if kind == "gss" and seed == seeds[0]:
                print("wrote", plot_gss(os.path.join(args.out, f"{name}_maskiges.png"), model,
                                        data), flush=True)
            results = evaluate_model(model, data, name)
            runs[name].append(flatten(results))
            raw.setdefault(name, []).append({"seed": seed, "train_seconds": seconds,
                                             "results": results, "checkpoints": log.rows})
            print(json.dumps({"config": name, "seed": seed, "seconds": round(seconds),
                              "mIoU": round(runs[name][-1]["mIoU"], 1),
                              "checkpoints": log.rows}), flush=True)
            with open(os.path.join(args.out, "results.json"), "w") as file:
                json.dump({"args": vars(args), "runs": raw}, file, indent=2)
    summaries = {name: (summarise(runs[name]), runs[name]) for name in names}
    text = table(summaries, seeds)
    print("\n" + text)
    command = "python benchmarks/digitscenes_seeds.py " + " ".join(sys.argv[1:])
    if args.record:
        with open(RESULTS, "a") as file:
            file.write(f"\n## DigitScenes over seeds: {', '.join(names)}\n\n`{command}` "
                       f"({args.steps} steps each, fine-tuning {args.finetune_steps} from "
                       f"{args.finetune_learning_rate:g}; "
                       f"{time.time() - started:.0f} s in all)\n\n"
                       f"{environment()}\n\n{text}\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
