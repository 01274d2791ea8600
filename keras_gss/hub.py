"""Hub I/O: pinned downloads, uploads and model cards (`keras_gss.presets` builds models).

Handles are `"hf://org/repo"` or `"hf://org/repo@revision"`. Downloads go
through `huggingface_hub`'s cache; a handle pinned to a commit is immutable,
so once cached it loads with no request at all.
"""

import os
import re

from keras_gss.preset_files import PRESET_FILES

GOLDEN_INPUT = os.path.join("test", "input.npz")
GOLDEN_EXPECTED = os.path.join("test", "expected.npz")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _complete(folder):
    return all(os.path.isfile(os.path.join(folder, name)) for name in PRESET_FILES)


def _interrupted(handle, folder):
    return OSError(
        f"Preset {handle!r} is only partly in the local Hub cache ({folder} lacks some of "
        f"{list(PRESET_FILES)}): an earlier download was interrupted. Load it once with "
        "network access, or run keras_gss.download_preset on a connected machine."
    )


def _cached_snapshot(repo, revision, cache_dir):
    """The cache folder of a commit's snapshot, whole or not, if there is one."""
    from huggingface_hub import constants

    if not (revision and _COMMIT.match(revision)):
        return None
    folder = os.path.join(cache_dir or constants.HF_HUB_CACHE,
                          "models--" + repo.replace("/", "--"), "snapshots", revision)
    return folder if os.path.isdir(folder) else None


def parse_handle(handle):
    """`"hf://org/repo@rev"` -> `("org/repo", "rev" or None)`."""
    if not isinstance(handle, str) or not handle.startswith("hf://"):
        raise ValueError(
            f"`handle` must look like 'hf://org/repo' or 'hf://org/repo@revision'; "
            f"received {handle!r}."
        )
    repo, _, revision = handle[len("hf://"):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"`handle` must name 'org/repo' after 'hf://'; received {handle!r}.")
    return repo, revision or None


def download_preset(handle, revision=None, cache_dir=None, local_files_only=False):
    """Fetch a preset into the Hub cache and return its local directory.

    Use it to pre-fetch on a connected machine for an air-gapped one (copy
    `cache_dir`, then load with `HF_HUB_OFFLINE=1` or `local_files_only=True`).

    Args:
        handle: `"hf://org/repo[@revision]"`.
        revision: branch, tag or commit; overrides the handle's.
        cache_dir: the Hub cache folder. Defaults to huggingface_hub's.
        local_files_only: never touch the network.
    """
    folder = _download(handle, revision, cache_dir, local_files_only, None, _complete)
    if not _complete(folder):  # only an offline load can meet an interrupted download
        raise _interrupted(handle, folder)
    return folder


def download_files(handle, patterns, revision=None, cache_dir=None, local_files_only=False):
    """Fetch only a repo's files matching `patterns` (e.g. a checkpoint to convert); its folder."""
    names = list(patterns)  # a cached commit needs no request only if it holds all of them
    return _download(handle, revision, cache_dir, local_files_only, names,
                     lambda folder: all(os.path.isfile(os.path.join(folder, n)) for n in names),
                     what="Repository")


def _download(handle, revision, cache_dir, local_files_only, patterns, complete, what="Preset"):
    import huggingface_hub
    from huggingface_hub import errors

    repo, pinned = parse_handle(handle)
    revision = revision or pinned
    options = dict(repo_id=repo, revision=revision, cache_dir=cache_dir,
                   allow_patterns=patterns)
    if revision and _COMMIT.match(revision) and not local_files_only:
        try:  # a commit never changes, so a complete cached copy needs no request
            folder = huggingface_hub.snapshot_download(local_files_only=True, **options)
            if complete(folder):
                return folder
        except errors.LocalEntryNotFoundError:
            pass
    try:
        return huggingface_hub.snapshot_download(local_files_only=local_files_only, **options)
    except errors.RevisionNotFoundError as error:
        raise OSError(
            f"{what} {handle!r}: revision {revision!r} does not exist on the Hub. "
            "List the repo's commits on its page, or drop '@revision' for the latest."
        ) from error
    except errors.RepositoryNotFoundError as error:
        raise OSError(
            f"{what} {handle!r}: the repository {repo!r} does not exist on the Hub "
            "(or is private: log in with `huggingface-cli login`)."
        ) from error
    except errors.LocalEntryNotFoundError as error:
        partial = _cached_snapshot(repo, revision, cache_dir)
        if partial and what == "Preset":
            raise _interrupted(handle, partial) from error
        fetch = (f"keras_gss.download_preset({handle!r}, cache_dir=...)" if what == "Preset"
                 else f"huggingface-cli download {repo} {' '.join(patterns)} --cache-dir ...")
        raise OSError(
            f"{what} {handle!r} is not in the local Hub cache and the Hub cannot be "
            f"reached (offline, or HF_HUB_OFFLINE=1). On a connected machine run {fetch} "
            "and copy that cache here, or pass a local directory instead."
        ) from error
    except Exception as error:  # transport errors (dropped connection, timeout) vary by client
        raise OSError(
            f"Downloading {what.lower()} {handle!r} failed ({type(error).__name__}: {error}). The "
            "Hub cache shows only whole files; run the same call again to resume."
        ) from error


def _metrics_table(results):
    from keras_gss.evaluation import format_table

    return format_table({"this model": results})


def model_card(repo, description, training=None, revision=None, record=None):
    """The model card (README.md) of a preset: what it is, how to load it,
    what it measured, how it was trained.

    Args:
        repo: `"org/repo"`.
        description: one paragraph on the model.
        training: the preset's `training.json` (from `keras-gss train`), or None.
        revision: the commit holding the weights, or None.
        record: the zoo record, for presets not yet published.
    """
    datasets = (training or {}).get("datasets") or (
        [record["data"]["dataset"]] if record else [])
    classifier = bool(record) and record["task"].endswith("Classifier")
    front = ["---", "library_name: keras_gss",
             f"pipeline_tag: image-{'classification' if classifier else 'segmentation'}",
             "license: apache-2.0"]
    if datasets:
        front += ["datasets:"] + [f"- {d}" for d in datasets]
    front += ["tags:", "- keras", "- keras-hub", "- open-set-segmentation", "---", ""]
    handle = f"hf://{repo}@{revision}" if revision else f"hf://{repo}@<commit>"
    lines = front + [f"# {repo}", "", description, "",
                     "```python", "import keras_gss",
                     f'model = keras_gss.from_preset("{handle}")',
                     *((["logits = model.predict(images)            # (B, C)",
                         "score = model.predict_anomaly(images)     # (B,), higher = unknown"])
                       if classifier else
                       ["logits = model.predict(images)            # (B, H, W, C)",
                        "score = model.predict_anomaly(images)     # (B, H, W), higher = anomalous"]),
                     "```", ""]
    lines += ["## Weights revision", "",
              (f"`{revision}`: pin it as above; the weights at this commit never change."
               if revision else "Not published yet: no weights on the Hub."), ""]
    lines += ["## Metrics", ""]
    results = (training or {}).get("results")
    if results:
        lines += ["Measured by keras_gss right after training (mIoU on the evaluation split; "
                  "AUROC / AP / FPR95 in %, anomalies positive, void excluded):", "",
                  _metrics_table(results), ""]
    elif (record or {}).get("provenance", {}).get("metrics"):
        measured = record["provenance"]["metrics"]
        sets = [k for k, v in measured.items() if isinstance(v, dict)]
        lines += [f"Measured by keras_gss {measured['keras_gss_version']} on {measured['date']} "
                  f"with `{measured['command']}` (mIoU on the evaluation split; the model's "
                  "own anomaly score, AUROC / AP / FPR95 in %):", "",
                  "| mIoU | " + " | ".join(f"{s} AUROC | {s} AP | {s} FPR95" for s in sets)
                  + " |", "|---|" + "---|---|---|" * len(sets),
                  f"| {measured['miou']} | " + " | ".join(
                      f"{measured[s]['auroc']} | {measured[s]['ap']} | {measured[s]['fpr95']}"
                      for s in sets) + " |", ""]
    else:
        lines += ["None measured by keras_gss yet.", ""]
    reported = (record or {}).get("provenance", {}).get("paper_reported")
    if reported:
        labels = {"miou": "mIoU", "top1": "top-1", "top5": "top-5"}
        lines += [f"Reported by the paper ({reported['source']}), not measured here: "
                  + ", ".join(f"{label} {reported[k]}" for k, label in labels.items()
                              if k in reported)
                  + "".join(f"; {k} AUROC {v['auroc']} / AP {v['ap']} / FPR95 {v['fpr95']}"
                            for k, v in reported.items() if isinstance(v, dict)) + ".", ""]
    open_set = (training or {}).get("open_set") or (record or {}).get("open_set")
    if open_set:
        threshold = open_set.get("threshold")
        lines += ["## Open-set use", "",
                  f"Score `{open_set.get('definition', open_set['score'])}`, higher is more "
                  "anomalous. Recommended threshold: "
                  + (f"{threshold:.6g} ({open_set['calibration']})." if threshold is not None
                     else f"none yet ({open_set['calibration']})."), ""]
    lines += ["## Training", ""]
    if training:
        recipe = training["recipe"]
        lines += [f"Recipe `{recipe['name']}` ({recipe.get('source', 'no source given')}), "
                  f"{training['steps']} steps of batch {training['batch_size']}, "
                  f"keras_gss {training['keras_gss_version']}. The exact command:", "",
                  "```bash", training["command"], "```", ""]
    elif record and not record["provenance"]["recipe"]:
        lines += [f"No recipe (`keras-gss train` trains segmenters): train on "
                  f"{record['provenance']['training_dataset']} with `model.fit`, as "
                  "`examples/open_set_digits.py` does on digits.", ""]
    elif record:
        name = record["provenance"]["recipe"]
        lines += [f"Recipe `{name}` on {record['provenance']['training_dataset']}:", "",
                  "```bash", f"keras-gss train {name} --out runs/"
                  f"{os.path.splitext(os.path.basename(name))[0]}", "```", ""]
    else:
        lines += ["Not recorded: published from a model object, not a `keras-gss train` "
                  "output.", ""]
    if record:
        lines += ["## Provenance", "", f"Paper: {record['provenance']['paper']}. "
                  f"License: {record['provenance']['license']}.", ""]
    lines += ["## Golden tensors", "",
              f"`{GOLDEN_INPUT}` and `{GOLDEN_EXPECTED}` hold a fixed input and the outputs it "
              "gave when published; `keras_gss.verify_preset(handle)` checks a download "
              "against them.", ""]
    return "\n".join(lines)


def describe(model):
    """The card's paragraph for a model published from a model object."""
    classes = model.get_config().get("num_classes")
    return (f"`{type(model).__name__}` with {classes} classes, saved by keras_gss. It gives "
            "class logits `(B, H, W, C)` and a per-pixel anomaly score (higher = more "
            "anomalous).")


def upload_preset(folder, repo, description, training=None, commit_message=None, token=None,
                  private=False):
    """Upload a preset folder, then its model card naming that commit.

    Args:
        folder: a preset directory (with its golden tensors).
        repo: `"org/repo"`; created if needed.
        description: the card's paragraph on the model.
        training: the preset's `training.json`, or None.
        commit_message: str. Defaults to "Upload keras_gss preset".
        token: Hub token. Defaults to the logged-in one.
        private: bool. Create the repo private.

    Returns:
        The handle pinned to the weights commit, `"hf://org/repo@<commit>"`.
    """
    import huggingface_hub

    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo, exist_ok=True, private=private)
    message = commit_message or "Upload keras_gss preset"
    weights = api.upload_folder(folder_path=folder, repo_id=repo, commit_message=message)
    card = model_card(repo, description, training=training, revision=weights.oid)
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo,
                    commit_message=f"Model card for {weights.oid[:12]}")
    return f"hf://{repo}@{weights.oid}"
