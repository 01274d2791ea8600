"""`keras-gss` command line: list presets, evaluate a saved model."""

import argparse
import sys


def _list(args):
    from keras_gss.presets import PRESETS

    for name in sorted(PRESETS):
        record = PRESETS[name]
        status = "weights" if record.get("weights") else "architecture only"
        print(f"{name:34s} {status:18s} {record['description']}")
    return 0


def _evaluate(args):
    import keras_gss
    from keras_gss.data import DigitScenes
    from keras_gss.data import normalize_images

    model = keras_gss.from_preset(args.model)
    images, labels, _ = DigitScenes.read(args.data, args.split)
    anomaly_sets = {}
    for split in args.anomaly_splits:
        set_images, set_labels, anomaly = DigitScenes.read(args.data, split)
        if anomaly is None:
            raise SystemExit(f"error: split {split!r} has no anomaly/ masks.")
        anomaly_sets[split] = (normalize_images(set_images), set_labels, anomaly)
    results = keras_gss.evaluate(
        model, normalize_images(images), labels, anomaly_sets=anomaly_sets,
        batch_size=args.batch_size, out_dir=args.out, name=args.name,
        verbose=int(not args.quiet))
    print(keras_gss.format_table({args.name: results}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-gss",
        description="Generative and open-set semantic segmentation for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the zoo presets and their status")
    listing.set_defaults(run=_list)
    evaluation = commands.add_parser(
        "evaluate", help="closed- and open-set evaluation of a saved model on a "
                         "dataset in the images/ + labels/ (+ anomaly/) PNG layout")
    evaluation.add_argument("model", help="preset directory or hf:// handle")
    evaluation.add_argument("--data", required=True,
                            help="dataset root holding <split>/images, <split>/labels")
    evaluation.add_argument("--split", default="test", help="closed-set split (default: test)")
    evaluation.add_argument("--anomaly-splits", nargs="*", default=["test_near", "test_far"],
                            help="splits with anomaly/ masks (default: test_near test_far)")
    evaluation.add_argument("--out", default=None, help="write table (JSON, markdown) and figures here")
    evaluation.add_argument("--name", default="model", help="row label and file prefix")
    evaluation.add_argument("--batch-size", type=int, default=16)
    evaluation.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation.set_defaults(run=_evaluate)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
