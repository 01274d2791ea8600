"""`keras-gss` command line: list, train, evaluate, predict, convert, publish."""

import argparse
import glob
import os
import shlex
import sys

from keras_gss.preset_files import GMMSEG_PRESET
from keras_gss.utils.quiet import quiet_frameworks


# The GMMSeg authors' released checkpoint, converted into GMMSEG_PRESET's architecture.
AUTHORS_WEIGHTS = "`keras-gss convert gmmseg GMMSeg-Segformer-b5-512x512-80k-cocostuff10k.pth`"


def preset_status(record):
    """"trained, <revision>", "trained here (<metrics>), not published" or
    "architecture only"."""
    if record["weights"].get("revision"):
        return "trained, " + record["weights"]["revision"][:12]
    measured = record["provenance"].get("metrics")
    if measured:
        sets = [k for k, v in measured.items() if isinstance(v, dict)]
        auroc = "/".join(str(measured[s]["auroc"]) for s in sets)
        return (f"trained here (mIoU {measured['miou']}, {'/'.join(sets)} AUROC {auroc}), "
                "not published")
    return "architecture only"


def _backbone_name(backbone):
    if backbone.get("decoder") == "mmseg":
        return f"{backbone['architecture']} {backbone['variant']}, mmseg's head"
    if backbone.get("variant"):
        return f"{backbone['architecture']} {backbone['variant']}"
    widths = "/".join(str(w) for w in backbone.get("hidden_dims", []))
    return f"{backbone['architecture']} custom ({widths})"


def zoo_table():
    """The zoo as a markdown table (also `zoo/README.md`'s table)."""
    from keras_gss.presets import PRESETS

    rows = ["| preset | backbone | dataset setting | recipe | starting weights | weights | "
            "status |", "|---|---|---|---|---|---|---|"]
    for name in sorted(PRESETS):
        record = PRESETS[name]
        recipe = record["provenance"]["recipe"]
        start = starting_weights(record)
        start = f"{start[0]}: {start[1]}" if start else "none"
        status = preset_status(record)
        if name == GMMSEG_PRESET:
            status += f"; the authors' trained model: {AUTHORS_WEIGHTS}"
        rows.append(f"| `{name}` | {_backbone_name(record['backbone'])} | "
                    f"{record['data']['dataset']} | {f'`{recipe}`' if recipe else '(fit)'} | "
                    f"{start} | `{record['weights']['handle']}` | {status} |")
    return "\n".join(rows)


def starting_weights(record):
    """`(name, where it comes from)` of a preset's starting encoder weights, or None."""
    from keras_gss import convert

    backbone = record["backbone"]
    variant = backbone.get("variant") or ""
    if record["family"] == "densehybrid" and record["data"]["dataset"] != "digitscenes":
        return "init_from", "a softmax or GMMSeg preset trained by its recipe"
    if backbone["architecture"] == "segformer" and variant:
        name = f"mit_{variant}"
        return name, f"`{convert.convert_command(name)}`"
    if variant.startswith("resnet"):  # keras-hub ships these ImageNet-1K weights
        return f"{variant[:6]}_{variant[6:]}_imagenet", "keras-hub, downloaded when training starts"
    return None


def _list(args):
    from keras_gss import convert
    from keras_gss.presets import PRESETS

    if args.markdown:
        print(zoo_table())
        return 0
    for name in sorted(PRESETS):
        record = PRESETS[name]
        start = starting_weights(record)
        if start and os.path.isdir(convert.converted_dir(start[0])):
            start = f"{start[0]}: converted here ({convert.converted_dir(start[0])})"
        else:
            start = (f"{start[0]}: {start[1].strip('`')}" if start
                     else "none (trained from scratch)")
        print(f"{name:34s} {preset_status(record):28s} {record['description']}\n"
              f"{'':34s} starting weights: {start}")
        if os.path.isdir(convert.converted_dir(name)):  # e.g. the GMMSeg authors' model
            print(f"{'':34s} converted weights here: converted:{name} "
                  f"({convert.converted_dir(name)})")
        elif name == GMMSEG_PRESET:
            print(f"{'':34s} the authors' trained model: {AUTHORS_WEIGHTS.strip('`')}")
    return 0


def _convert(args):
    from keras_gss import convert

    if args.kind == "mit":
        heads = [int(h) for h in args.num_heads.split(",")] if args.num_heads else None
        backbone = convert.mit(args.source, num_heads=heads)
        name = convert.mit_variant(backbone)
        out = args.out or (name and convert.converted_dir(name))
        if not out:
            raise ValueError(f"{args.source!r} is no published MiT size "
                             f"({sorted(convert.MIT_VARIANTS)}); pass --out.")
        backbone.save_to_preset(out)
        reference = f"converted:{name}" if name and not args.out else out
        print(f"wrote {out}: {name or 'MiT'} ({backbone.count_params():,} parameters); a "
              f"recipe's encoder_weights names it {reference!r}")
    elif args.kind == "gmmseg":
        _convert_gmmseg(args)
    return 0


def _convert_gmmseg(args):
    """The authors' checkpoint as a preset, with the record's class names and test settings."""
    import hashlib
    import json

    from keras_gss import convert
    from keras_gss.preset_files import CONVERSION_FILE
    from keras_gss.presets import PRESETS

    model = convert.gmmseg(args.source, image_shape=(args.image_size, args.image_size, 3))
    release = convert.is_gmmseg_release(model)
    out = args.out or (release and convert.converted_dir(convert.GMMSEG_PRESET))
    if not out:
        raise ValueError(f"{args.source!r} is not shaped as the authors' released model "
                         f"({convert.GMMSEG_PRESET}); pass --out.")
    record = PRESETS[convert.GMMSEG_PRESET]
    data = dict(record["data"], image_shape=list(model.input.shape[1:]))
    if model.gmm_head.num_classes != len(data["class_names"]):
        data["class_names"] = None  # a checkpoint of another dataset: names unknown
    digest = None
    if os.path.isfile(args.source):
        digest = hashlib.sha256()
        with open(args.source, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        digest = digest.hexdigest()
    model.save_to_preset(out)
    with open(os.path.join(out, CONVERSION_FILE), "w") as file:
        json.dump({"source": args.source, "sha256": digest,
                   "record": convert.GMMSEG_PRESET if release else None, "data": data,
                   "paper_reported": record["provenance"].get("paper_reported")},
                  file, indent=2)
    reference = f"converted:{convert.GMMSEG_PRESET}" if release and not args.out else out
    print(f"wrote {out}: GMMSeg, {model.gmm_head.num_classes} classes "
          f"({model.count_params():,} parameters); load it with "
          f"keras_gss.from_preset({reference!r}) or evaluate it with "
          f"keras-gss evaluate {reference} --dataset {data['dataset']} --data ROOT --split test")


def _train(args):
    from keras_gss.training import train_recipe

    recipe = None
    if args.encoder_weights is not None:
        from keras_gss.training import load_recipe

        recipe = load_recipe(args.recipe)
        recipe["encoder_weights"] = None if args.encoder_weights == "none" \
            else args.encoder_weights
    command = "keras-gss " + shlex.join(args.argv)
    train_recipe(recipe or args.recipe, args.out, data_root=args.data, steps=args.steps,
                 batch_size=args.batch_size, evaluate=not args.no_eval,
                 verbose=args.verbose, command=command)
    return 0


def _evaluate(args):
    import keras_gss
    from keras_gss.data import DigitScenes
    from keras_gss.data import normalize_images
    from keras_gss.data import read_dataset
    from keras_gss.inference import window_settings
    from keras_gss.presets import preset_data

    model = keras_gss.from_preset(args.model)
    window = None
    if args.dataset == "digitscenes":
        closed = DigitScenes.read(args.data, args.split or "test")[:2]
        anomaly_sets = {}
        for split in args.anomaly_splits:
            set_images, set_labels, anomaly = DigitScenes.read(args.data, split)
            if anomaly is None:
                raise SystemExit(f"error: split {split!r} has no anomaly/ masks.")
            anomaly_sets[split] = (set_images, set_labels, anomaly)
    else:
        # Benchmarks' images vary in size: stream them through windows of the model's input.
        closed = (read_dataset(args.dataset, args.data, **({"split": args.split}
                                                           if args.split else {})), None)
        anomaly_sets = {}
        for item in args.anomaly:
            name, _, root = item.partition("=")
            if not root:
                raise SystemExit(f"error: --anomaly {item!r} must be READER=ROOT, e.g. "
                                 "fishyscapes_laf=data/fs_laf.")
            anomaly_sets[name] = read_dataset(name, root)
        # The preset's recorded test settings (stride, mmseg's keep-ratio rescale), if any.
        window = window_settings((preset_data(args.model) or {}).get("sliding_window"),
                                 int(model.input.shape[1]), args.stride)
    results = keras_gss.evaluate(
        model, *closed, anomaly_sets=anomaly_sets, batch_size=args.batch_size,
        out_dir=args.out, name=args.name, verbose=int(not args.quiet),
        sliding_window=window, preprocess=normalize_images,
        negative_groups=DigitScenes.negative_groups if args.dataset == "digitscenes" else None)
    print(keras_gss.format_table({args.name: results}))
    return 0


def _image_paths(items):
    paths = []
    for item in items:
        if os.path.isdir(item):
            paths += sorted(p for p in glob.glob(os.path.join(item, "*"))
                            if p.lower().endswith((".png", ".jpg", ".jpeg")))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise SystemExit(f"error: image {item!r} does not exist.")
    if not paths:
        raise SystemExit("error: no PNG or JPEG images found in IMAGES.")
    return paths


def _predict(args):
    import matplotlib
    import numpy as np
    from PIL import Image

    import keras_gss
    from keras_gss.baselines import max_softmax_score
    from keras_gss.data import normalize_images
    from keras_gss.inference import predict_sliding_window
    from keras_gss.inference import window_settings
    from keras_gss.models.open_set_image_segmenter import predict_logits_and_scores
    from keras_gss.presets import preset_data

    model = keras_gss.from_preset(args.preset)
    # A preset that records test settings (a converted one) is read at each image's own size.
    recorded = (preset_data(args.preset) or {}).get("sliding_window")
    if isinstance(model, keras_gss.models.OpenSetImageClassifier):
        raise SystemExit(f"error: {args.preset!r} is an image classifier; `predict` writes "
                         "segmentation maps. Use model.predict_outputs(images) in Python.")
    calibrated = args.threshold if args.threshold is not None \
        else getattr(model, "anomaly_threshold", None)
    height, width = model.input.shape[1:3]
    os.makedirs(args.out, exist_ok=True)
    palette = (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
    for path in _image_paths(args.images):
        image = Image.open(path).convert("RGB")
        if recorded:
            image = np.asarray(image)
            out = predict_sliding_window(model, normalize_images(image[None]),
                                         **window_settings(recorded, width))
            logits, score = out["logits"], out.get("anomaly_score")
        else:
            image = np.asarray(image.resize((width, height), Image.BILINEAR))
            logits, score = predict_logits_and_scores(model, normalize_images(image[None]))
        logits = logits[0]
        classes = logits.argmax(-1)
        score = (np.asarray(max_softmax_score(logits[None])) if score is None else score)[0]
        # Without a calibrated threshold, flag each image's top 5% for viewing.
        threshold = calibrated if calibrated is not None else np.quantile(score, 0.95)
        spread = np.ptp(score) or 1.0
        heat = matplotlib.colormaps["magma"]((score - score.min()) / spread)[..., :3]
        overlay = (0.5 * image + 0.5 * palette[classes % len(palette)]).astype(np.uint8)
        overlay[score > threshold] = (255, 0, 0)
        stem = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0])
        Image.fromarray(classes.astype(np.uint8)).save(f"{stem}_class_ids.png")
        Image.fromarray((heat * 255).astype(np.uint8)).save(f"{stem}_anomaly.png")
        Image.fromarray(overlay).save(f"{stem}_open_set.png")
        print(f"{path}: wrote {stem}_class_ids.png, _anomaly.png, _open_set.png "
              f"(anomaly threshold {threshold:.4g})")
    return 0


def _publish(args):
    import keras_gss

    handle = keras_gss.publish_preset(args.preset, args.handle, commit_message=args.message,
                                      private=args.private)
    print(handle)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-gss",
        description="Generative and open-set semantic segmentation for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the zoo presets and their status")
    listing.add_argument("--markdown", action="store_true",
                         help="print the zoo table in markdown (as in zoo/README.md)")
    listing.set_defaults(run=_list)
    training = commands.add_parser(
        "train", help="train a zoo preset from a recipe (zoo/recipes/*.json), evaluate it and "
                      "save it as a preset with its training record; rerun to resume")
    training.add_argument("recipe", help="recipe JSON file")
    training.add_argument("--out", required=True, help="output folder (preset, results, figures)")
    training.add_argument("--data", default=None,
                          help="dataset root (default: the recipe's; DigitScenes: generated)")
    training.add_argument("--steps", type=int, default=None,
                          help="training steps (default: the recipe's iterations)")
    training.add_argument("--batch-size", type=int, default=None,
                          help="global batch size (default: the recipe's)")
    training.add_argument("--encoder-weights", default=None,
                          help="pretrained encoder: a .weights.h5 file, a keras-hub preset, "
                               "converted:<name> (keras-gss convert), a MiT checkpoint to "
                               "convert (.pth/.safetensors), or 'none' (default: the recipe's)")
    training.add_argument("--no-eval", action="store_true", help="skip evaluation")
    training.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                          help="0 silent, 1 progress bars, 2 one line per epoch (default)")
    training.set_defaults(run=_train)
    evaluation = commands.add_parser(
        "evaluate", help="closed- and open-set evaluation of a saved model on DigitScenes "
                         "(images/ + labels/ + anomaly/ PNGs) or a benchmark in its official "
                         "layout (--dataset), streamed through sliding windows")
    evaluation.add_argument("model", help="preset directory, converted:<name> or hf:// handle")
    evaluation.add_argument("--data", required=True,
                            help="dataset root: <split>/images, <split>/labels for DigitScenes, "
                                 "or the benchmark's unpacked folder")
    evaluation.add_argument("--dataset", default="digitscenes",
                            help="dataset layout: digitscenes (default) or a reader of "
                                 "keras_gss.data.read_dataset (cityscapes, ade20k, "
                                 "coco_stuff10k, streethazards, ...)")
    evaluation.add_argument("--split", default=None,
                            help="closed-set split (default: test for DigitScenes, the "
                                 "reader's default otherwise, e.g. val / validation)")
    evaluation.add_argument("--anomaly-splits", nargs="*", default=["test_near", "test_far"],
                            help="DigitScenes splits with anomaly/ masks (default: test_near "
                                 "test_far)")
    evaluation.add_argument("--anomaly", nargs="*", default=[], metavar="READER=ROOT",
                            help="benchmark anomaly sets, e.g. fishyscapes_laf=data/fs_laf "
                                 "road_anomaly=data/RoadAnomaly")
    evaluation.add_argument("--stride", type=int, default=None,
                            help="sliding-window stride for benchmarks (default: the preset's "
                                 "recorded one, else 2/3 of the model's input size; a recorded "
                                 "keep-ratio rescale, e.g. mmseg's 2048x512, applies too)")
    evaluation.add_argument("--out", default=None, help="write table (JSON, markdown) and figures here")
    evaluation.add_argument("--name", default="model", help="row label and file prefix")
    evaluation.add_argument("--batch-size", type=int, default=16)
    evaluation.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation.set_defaults(run=_evaluate)
    prediction = commands.add_parser(
        "predict", help="class map, anomaly heatmap and open-set overlay PNGs for images (resized "
                        "to the model's input, or at their own size through a converted "
                        "preset's recorded windows)")
    prediction.add_argument("preset", help="preset directory, converted:<name>, zoo name or "
                                           "hf:// handle")
    prediction.add_argument("images", nargs="+", help="image files or folders of PNG/JPEG")
    prediction.add_argument("--out", required=True, help="folder for the PNGs")
    prediction.add_argument("--threshold", type=float, default=None,
                            help="anomaly threshold (default: the preset's calibrated one, else "
                                 "each image's 95th percentile)")
    prediction.set_defaults(run=_predict)
    converting = commands.add_parser(
        "convert", help="convert released PyTorch weights (read without running pickled "
                        "code) into a Keras preset folder")
    converting.add_argument("kind", choices=("mit", "gmmseg"),
                            help="mit: SegFormer's ImageNet encoder (NVlabs' mit_b*.pth, "
                                 "mmseg's mit_b*_mmseg.pth, or transformers' nvidia/mit-b*); "
                                 "gmmseg: the GMMSeg authors' checkpoint (GMMSeg-Segformer-b5-"
                                 "512x512-80k-cocostuff10k.pth)")
    converting.add_argument("source", help="checkpoint file, folder, or hf://org/repo")
    converting.add_argument("--out", default=None,
                            help="output folder (default: $KERAS_GSS_HOME/converted/<mit_bN>, "
                                 "which recipes name as converted:<mit_bN>; for gmmseg "
                                 "converted/gmmseg_segformer_b5_cocostuff10k)")
    converting.add_argument("--image-size", type=int, default=512,
                            help="gmmseg: the model's square input, the sliding window's side "
                                 "(default 512, the authors' crop)")
    converting.add_argument("--num-heads", default=None,
                            help="attention heads per stage when no config.json says "
                                 "(default 1,2,5,8, every MiT's)")
    converting.set_defaults(run=_convert)
    publishing = commands.add_parser(
        "publish", help="upload a preset directory to the Hugging Face Hub; prints the "
                        "handle pinned to the new commit")
    publishing.add_argument("preset", help="preset directory")
    publishing.add_argument("handle", help="hf://org/repo")
    publishing.add_argument("--message", default=None, help="commit message")
    publishing.add_argument("--private", action="store_true", help="create the repo private")
    publishing.set_defaults(run=_publish)
    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true",
                             help="show the Python traceback of an error")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quiet_frameworks()
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError) as error:  # bad input: one line, no traceback
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
