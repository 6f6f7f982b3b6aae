"""Out-of-distribution accuracy: a checkpoint against datasets under affine shifts.

Every (dataset, shift kind, severity) cell is one batched pass: the whole test split, viewed
as images (N, C, H, W), goes through one ``torchvision.transforms.v2.functional.affine``
call on the device, then through the model. At the identity severity (rotate 0, translate
0, scale 1) no transform runs at all, so that cell is exactly the plain test accuracy.
Datasets of another input shape are resized to the model's first and, with ``normalize:
model`` (the default), standardised with the statistics the model trained with
(:mod:`.renormalise`); a checkpoint that records none falls back to each dataset's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .contract.catalogue import known_datasets
from .contract.errors import DatasetUnavailableError, InvalidSpecError
from .contract.evaluate_spec import SHIFT_IDENTITY, EvaluateSpec
from .datasets import load_dataset
from .images import as_images
from .metrics import evaluate, predictions
from .ood_detection import score_detection
from .renormalise import inputs_for_model
from .run import resolve_device

PLOT_NAME = "accuracy_vs_severity.png"
NO_RECORD_NOTE = (
    "normalize: the checkpoint records no input normalisation (written before checkpoints "
    "recorded it, or trained on noise only), so every dataset was standardised with its own "
    "statistics ('own')"
)


def shift_images(images: torch.Tensor, kind: str, severity: float, fill: float) -> torch.Tensor:
    """(N, C, H, W) images rotated (degrees), translated (pixels, both axes) or scaled."""
    if severity == SHIFT_IDENTITY[kind]:
        return images
    # Imported here: torchvision takes ~1.5 s to import (its ops pull in torch's compiler
    # stack), and only a shifted cell needs it, not every worker and CLI start.
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    angle, translate, scale = 0.0, [0.0, 0.0], 1.0
    if kind == "rotate":
        angle = float(severity)
    elif kind == "translate":
        translate = [float(severity), float(severity)]  # sub-pixel shifts interpolate
    else:
        scale = float(severity)
    return TF.affine(
        images,
        angle=angle,
        translate=translate,
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
        fill=fill,
    )


def evaluate_checkpoint(
    spec: EvaluateSpec,
    checkpoint: Path,
    out_dir: Path,
    *,
    device: str | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    dataset_files: Mapping[str, Path] | None = None,
    trust_training_set: bool = True,
) -> dict:
    """Accuracy of ``checkpoint``'s model per dataset × shift × severity.

    ``checkpoint`` is the file to evaluate (the caller resolves ``spec.init_from``, a job
    id or path, to it); torchvision sets are read from ``data_dir`` (fetched only when
    ``download``); ``dataset_files`` maps non-registry names (``upload:<id>``) to local
    ``.npz`` files. Returns (and writes as ``result.json``) ``{"checkpoint", "normalize",
    "evaluations": [{dataset, shift, severity, accuracy}, ...], "plot"}`` (``normalize``: the
    normalisation applied, with ``"notes"`` saying why when it is not the one asked for); the
    accuracy-vs-severity plot is written as ``accuracy_vs_severity.png`` in ``out_dir``.
    When the checkpoint trained on a dataset, each cell also has ``ood_auroc`` and the
    result a ``calibration`` entry with a reliability diagram (:mod:`.ood_detection`).
    ``trust_training_set=False`` (a checkpoint from outside, e.g. an upload) takes the
    dataset its metadata names as the default and in-distribution set only when it is a
    built-in: an ``npz:`` path there names a file of whoever wrote it, not one to read here.
    """
    device = resolve_device(device or spec.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = load_checkpoint(checkpoint)
    model = model_from_checkpoint(checkpoint, device)
    config = model.config
    normalize, notes = spec.normalize, []
    if normalize == "model" and stored.normalisation is None:
        normalize = "own"
        notes.append(NO_RECORD_NOTE)
    model_norm = stored.normalisation if normalize == "model" else None
    in_distribution = stored.spec.train.dataset if stored.spec.train else None
    if not trust_training_set and in_distribution not in known_datasets():
        in_distribution = None
    names = spec.datasets or [in_distribution]
    if names[0] is None:
        raise InvalidSpecError(
            "datasets: required for a checkpoint that trained on no dataset (or, uploaded, on "
            "one that is not built in)"
        )
    evaluations, confidences = [], []  # confidences[i]: cell i's max softmax probability
    reference = None  # (dataset, x, y): the in-distribution test split, for ood_auroc
    for name in names:
        data = load_dataset(name, data_dir, device, dataset_files, download=download)
        if data.num_classes != config.num_classes:
            raise InvalidSpecError(
                f"datasets: {name!r} has {data.num_classes} classes, the model {config.num_classes}"
            )
        x = inputs_for_model(data, data.x_test, config.input_shape, model_norm)
        if name == in_distribution:
            reference = (name, x, data.y_test)
        images = as_images(x)  # (N, C, H, W)
        fill = x.min().item()  # the background of digit-like images
        for kind, severities in spec.shifts.items():
            for severity in severities:
                shifted = shift_images(images, kind, severity, fill).reshape(x.shape)
                accuracy = evaluate(model, shifted, data.y_test, spec.eval_batch_size)[1]
                confidences.append(predictions(model, shifted, spec.eval_batch_size)[0])
                evaluations.append(
                    {"dataset": name, "shift": kind, "severity": severity, "accuracy": accuracy}
                )
    plot_evaluations(evaluations, out_dir / PLOT_NAME)
    result = {
        "checkpoint": str(checkpoint),
        "normalize": normalize,
        "evaluations": evaluations,
        "plot": PLOT_NAME,
    }
    if notes:
        result["notes"] = notes
    if reference is None and in_distribution is not None:
        try:
            data = load_dataset(in_distribution, data_dir, device, dataset_files, download=download)
        except (DatasetUnavailableError, InvalidSpecError) as exc:
            result.setdefault("notes", []).append(f"no ood_auroc or calibration: {exc}")
        else:
            x = inputs_for_model(data, data.x_test, config.input_shape, model_norm)
            reference = (in_distribution, x, data.y_test)
    if reference is not None:
        result["calibration"] = score_detection(
            model, reference, evaluations, confidences, spec.eval_batch_size, out_dir
        )
    tmp = out_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "result.json")
    return result


def plot_evaluations(evaluations: list[dict], path: Path) -> None:
    """One panel per shift kind: accuracy vs severity, one line per dataset."""
    from .plots import new_figure, save_figure

    kinds = list(dict.fromkeys(e["shift"] for e in evaluations))
    figure, axes = new_figure(len(kinds))
    for axis, kind in zip(axes, kinds, strict=True):
        for dataset in dict.fromkeys(e["dataset"] for e in evaluations):
            cells = sorted(
                (e["severity"], e["accuracy"])
                for e in evaluations
                if e["shift"] == kind and e["dataset"] == dataset
            )
            axis.plot(*zip(*cells, strict=True), marker="o", label=dataset)
        axis.set(title=kind, xlabel="severity", ylabel="test accuracy", ylim=(0, 1.02))
        axis.legend()
    save_figure(figure, path)
