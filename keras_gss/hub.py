"""Presets on the Hugging Face Hub: download, publish, verify.

Handles are `"hf://org/repo"` or `"hf://org/repo@revision"`. Downloads go
through `huggingface_hub`'s cache; a handle pinned to a commit is immutable,
so once cached it loads with no request at all.
"""

import os
import re
import tempfile

import numpy as np

GOLDEN_INPUT = os.path.join("test", "input.npz")
GOLDEN_EXPECTED = os.path.join("test", "expected.npz")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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
    import huggingface_hub
    from huggingface_hub import errors

    repo, pinned = parse_handle(handle)
    revision = revision or pinned
    options = dict(repo_id=repo, revision=revision, cache_dir=cache_dir)
    if revision and _COMMIT.match(revision) and not local_files_only:
        try:  # a commit never changes, so a cached copy needs no request
            return huggingface_hub.snapshot_download(local_files_only=True, **options)
        except errors.LocalEntryNotFoundError:
            pass
    try:
        return huggingface_hub.snapshot_download(local_files_only=local_files_only, **options)
    except errors.RevisionNotFoundError as error:
        raise OSError(
            f"Preset {handle!r}: revision {revision!r} does not exist on the Hub. "
            "List the repo's commits on its page, or drop '@revision' for the latest."
        ) from error
    except errors.RepositoryNotFoundError as error:
        raise OSError(
            f"Preset {handle!r}: the repository {repo!r} does not exist on the Hub "
            "(or is private: log in with `huggingface-cli login`)."
        ) from error
    except errors.LocalEntryNotFoundError as error:
        raise OSError(
            f"Preset {handle!r} is not in the local Hub cache and the Hub cannot be "
            "reached (offline, or HF_HUB_OFFLINE=1). On a connected machine run "
            f"keras_gss.download_preset({handle!r}, cache_dir=...) and copy that "
            "cache here, or pass the preset's local directory."
        ) from error


def _golden(model, images):
    expected = {"logits": np.asarray(model.predict(images, verbose=0))}
    if hasattr(model, "predict_anomaly"):
        expected["anomaly_score"] = np.asarray(model.predict_anomaly(images, verbose=0))
    return expected


def _model_card(model, repo):
    config = model.get_config()
    classes = config.get("num_classes")
    return (
        "---\n"
        "library_name: keras_gss\n"
        "pipeline_tag: image-segmentation\n"
        "tags:\n- keras\n- keras-hub\n- open-set-segmentation\n"
        "---\n\n"
        f"# {repo}\n\n"
        f"`{type(model).__name__}` with {classes} classes, saved by keras_gss. It gives class "
        "logits `(B, H, W, C)` and, for open-set models, a per-pixel anomaly score "
        "(higher = more anomalous).\n\n"
        "```python\nimport keras_gss\n"
        f"model = keras_gss.from_preset(\"hf://{repo}@<commit>\")  # pin the commit you tested\n"
        "```\n\n"
        f"`{GOLDEN_INPUT}` and `{GOLDEN_EXPECTED}` hold a fixed input and the outputs it gave "
        "when published; `keras_gss.verify_preset(handle)` checks a download against them.\n"
    )


def publish_preset(model, handle, commit_message=None, token=None, private=False):
    """Upload a model as a preset, with golden tensors and a model card.

    Args:
        model: a keras_gss task model, or a preset directory.
        handle: `"hf://org/repo"`; the repo is created if needed.
        commit_message: str. Defaults to "Upload keras_gss preset".
        token: Hub token. Defaults to the logged-in one.
        private: bool. Create the repo private.

    Returns:
        The handle pinned to the new commit, `"hf://org/repo@<commit>"`.
    """
    import huggingface_hub

    from keras_gss.presets import from_preset

    repo, revision = parse_handle(handle)
    if revision:
        raise ValueError(
            f"`handle` must not pin a revision when publishing; received {handle!r}."
        )
    if isinstance(model, str):
        model = from_preset(model)
    with tempfile.TemporaryDirectory() as folder:
        model.save_to_preset(folder)
        shape = (1,) + tuple(model.input.shape[1:])
        images = np.random.default_rng(0).normal(size=shape).astype("float32")
        os.makedirs(os.path.join(folder, "test"))
        np.savez(os.path.join(folder, GOLDEN_INPUT), images=images)
        np.savez(os.path.join(folder, GOLDEN_EXPECTED), **_golden(model, images))
        with open(os.path.join(folder, "README.md"), "w") as file:
            file.write(_model_card(model, repo))
        api = huggingface_hub.HfApi(token=token)
        api.create_repo(repo, exist_ok=True, private=private)
        info = api.upload_folder(folder_path=folder, repo_id=repo,
                                 commit_message=commit_message or "Upload keras_gss preset")
    return f"hf://{repo}@{info.oid}"


def verify_preset(preset, atol=1e-5, **download_options):
    """Reload a published preset and compare it with its golden tensors.

    Args:
        preset: an `hf://` handle or a downloaded preset directory.
        atol: largest absolute difference allowed.
        **download_options: for `download_preset` (`cache_dir`, ...).

    Returns:
        dict output name -> largest absolute difference.

    Raises:
        ValueError: an output differs by more than `atol`.
    """
    from keras_gss.presets import from_preset

    folder = download_preset(preset, **download_options) if preset.startswith("hf://") \
        else preset
    golden = os.path.join(folder, GOLDEN_EXPECTED)
    if not os.path.isfile(golden):
        raise OSError(f"Preset {preset!r} has no {GOLDEN_EXPECTED}; publish it with "
                      "keras_gss.publish_preset to get one.")
    model = from_preset(folder)
    images = np.load(os.path.join(folder, GOLDEN_INPUT))["images"]
    expected = dict(np.load(golden))
    differences = {name: float(np.max(np.abs(value - expected[name])))
                   for name, value in _golden(model, images).items() if name in expected}
    bad = {k: v for k, v in differences.items() if not v <= atol}
    if bad:
        raise ValueError(f"Preset {preset!r} does not reproduce its golden outputs: largest "
                         f"differences {bad} exceed atol={atol}.")
    return differences
