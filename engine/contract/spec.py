"""The job spec: one pydantic model shared by the CLI, the API and the worker.

This module imports no torch, so the API can validate a job without loading the training
stack. Every hyperparameter is a field with a documented default; none is a hidden constant.
Limits on sizes (widths, depth, epochs, samples) come from :class:`Limits`, passed as
validation context (``JobSpec.model_validate(data, context={"limits": limits})``), so a
deployment sets them once in its settings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from .limits import Limits
from .model_spec import MAX_KERNEL_SIZE, Activation, ModelSpec, RuleName
from .spec_base import SpecModel
from .states import JobKind

# The spec's names, the model block's and the base's included: code imports them from here.
__all__ = [
    "MAX_KERNEL_SIZE",
    "Activation",
    "DeviceName",
    "EarlyStopSpec",
    "JobSpec",
    "MetaLossSpec",
    "MetricsSpec",
    "ModelSpec",
    "NoiseSpec",
    "NotifySpec",
    "OptimizerSpec",
    "PretrainOptimizerSpec",
    "PretrainSpec",
    "RuleName",
    "SpecModel",
    "TrainSpec",
    "parse_spec",
]

DeviceName = Literal["cpu", "cuda", "auto"]

MAX_TIME_LIMIT_S = 365 * 86_400  # a year: a bound on the field, not a deployment's limit


class OptimizerSpec(SpecModel):
    """Optimizer of one phase. Defaults follow docs/design.md's measured prototype (Adam, 1e-3)."""

    name: Literal["adam", "sgd"] = Field("adam", description="Optimizer: `adam` or `sgd`.")
    lr: float = Field(1e-3, gt=0, le=10, description="Learning rate, in (0, 10].")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum, in [0, 1).")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay, in [0, 1].")
    # Not strict as a whole: a pair arrives as a list from JSON, YAML and the database (its
    # two numbers are still strict floats).
    betas: tuple[float, float] = Field(
        (0.9, 0.999), strict=False, description="Adam's (beta1, beta2), each in [0, 1)."
    )

    @model_validator(mode="after")
    def _betas_in_range(self) -> OptimizerSpec:
        for i, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
        return self


NOISE_STUDY = "docs/noise_ablation.md"  # where the pretraining defaults were measured


class PretrainOptimizerSpec(OptimizerSpec):
    """Optimizer of noise pretraining: the fields of :class:`OptimizerSpec`, with our own
    defaults for the noise phase (Adam at lr 1e-4, no weight decay).

    Why its own defaults: on noise, a fast optimizer (Adam 1e-3, the train phase's default)
    aligns the last layer only briefly (it dips to ~78° by ~50k samples, then drifts back to
    ~89°); a slower one falls further and stays low for longer. Measured on 784-input nets
    in docs/noise_ablation.md.
    """

    lr: float = Field(
        1e-4,
        gt=0,
        le=10,
        description="Learning rate, in (0, 10]. Default 1e-4 is our choice for noise (the "
        "train phase's 1e-3 aligns, then loses it within the default samples): "
        f"see {NOISE_STUDY}.",
    )


class NoiseSpec(SpecModel):
    """Input noise for pretraining: N(mean, std), or a uniform with the same mean and variance."""

    distribution: Literal["normal", "uniform"] = Field(
        "normal", description="`normal` N(mean, std²) or variance-matched `uniform`."
    )
    mean: float = Field(0.0, ge=-1e3, le=1e3, description="Mean of the noise inputs.")
    std: float = Field(1.0, gt=0, le=1e3, description="Standard deviation of the noise inputs.")
    labels: Literal["uniform", "soft"] = Field(
        "uniform",
        description="`uniform`: a class drawn uniformly per sample; "
        "`soft`: the uniform distribution over classes as the target.",
    )


class MetricsSpec(SpecModel):
    """How the per-epoch metrics are measured (fixed probe batches, drawn once per job)."""

    probe_size: int = Field(
        256, ge=8, le=10_000, description="Samples in the fixed batch for signal angles."
    )
    readout_size: int = Field(
        1024, ge=8, le=100_000, description="Noise samples for the readout metrics."
    )
    eval_batch_size: int = Field(
        4096, ge=1, le=1_000_000, description="Batch size for test-set evaluation."
    )


class MetaLossSpec(SpecModel):
    """Adaptability: every ``every`` epochs, the loss on each task after ``steps`` steps.

    Measured on a copy of the model (the run itself is untouched) that learns by the run's own
    rule from the current weights: ``steps`` batches of ``batch_size`` from the task's train
    split (the same batches at every measurement, so the curve reflects the weights only),
    then the loss on the first ``eval_size`` samples of its test split. Tasks must have the
    model's class count; images of another size are resized (bilinear) to the model's input
    shape. Recorded as ``meta_loss`` (mean over tasks) and ``meta_loss/<task>`` at epoch 0,
    every ``every`` epochs, and at the phase's last epoch.
    """

    tasks: list[str] = Field(
        min_length=1, max_length=16, description="Task datasets, e.g. ['digits', 'kmnist']."
    )
    every: int = Field(1, ge=1, description="Measure every N epochs (and at epoch 0 and the end).")
    steps: int = Field(10, ge=0, le=10_000, description="Adaptation steps per task.")
    lr: float = Field(0.01, gt=0, le=10, description="Adaptation learning rate.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Adaptation batch size.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Adaptation optimizer.")
    eval_size: int = Field(
        1024, ge=1, le=1_000_000, description="Test samples the adapted loss is measured on."
    )


class PretrainSpec(SpecModel):
    """Random-noise pretraining: fresh noise inputs and random labels every batch."""

    dataset: str | None = Field(
        None,
        description="Dataset whose input shape and class count the noise takes; "
        "default: train.dataset.",
    )
    epochs: int = Field(
        10,
        ge=1,
        description="Noise epochs (metrics are recorded after each). Default 10 × 60,000 "
        "samples: our choice, where the slow default optimizer has aligned the last layer "
        f"(see {NOISE_STUDY}).",
    )
    samples_per_epoch: int = Field(60_000, ge=1, description="Noise samples per epoch.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Noise batch size.")
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    optimizer: PretrainOptimizerSpec = Field(
        default_factory=PretrainOptimizerSpec,
        description="The noise phase's optimizer; its own defaults (Adam, lr 1e-4), not the "
        f"train phase's: see {NOISE_STUDY}.",
    )
    meta_loss: MetaLossSpec | None = Field(None, description="Meta-loss measured in this phase.")


class EarlyStopSpec(SpecModel):
    """Train to convergence: stop once the test accuracy has not improved for a while.

    After each epoch, the phase stops when the best test accuracy of the last ``patience``
    epochs is not more than ``min_delta`` above the best before them; ``epochs`` still
    bounds the phase. The result records the epoch it stopped at and the best accuracy.
    """

    patience: int = Field(3, ge=1, le=1000, description="Epochs without improvement, in [1, 1000].")
    min_delta: float = Field(
        0.0, ge=0, le=1, description="Least rise in test accuracy that counts, in [0, 1]."
    )


class TrainSpec(SpecModel):
    """Training on data, evaluated on the dataset's test split after every epoch."""

    dataset: str = Field(description="Dataset name: `digits`, `mnist`, …, or `npz:<path>`.")
    epochs: int = Field(5, ge=1, description="Data epochs.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Training batch size.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    meta_loss: MetaLossSpec | None = Field(None, description="Meta-loss measured in this phase.")
    early_stop: EarlyStopSpec | None = Field(
        None, description="Stop before `epochs` once the test accuracy stops improving."
    )


WebhookEvent = Literal["state", "succeeded", "failed", "cancelled"]
MAX_WEBHOOK_URL_CHARS = 2048


class NotifySpec(SpecModel):
    """A webhook for this job's state changes (signed deliveries; see the README's Trackers).

    Only the form is checked here; whether the deployment lets webhooks reach the host is
    checked at submit (and again at each delivery) by the service.
    """

    url: str = Field(
        max_length=MAX_WEBHOOK_URL_CHARS,
        description="`http://` or `https://` URL each delivery is POSTed to.",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: ["state"],
        min_length=1,
        max_length=4,
        description="`state` (every state change), `succeeded`, `failed`, `cancelled`.",
    )

    @model_validator(mode="after")
    def _url_is_http(self) -> NotifySpec:
        scheme, sep, rest = self.url.partition("://")
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        if not sep or scheme.lower() not in ("http", "https") or not host:
            raise ValueError("url: must be an http:// or https:// URL with a host")
        return self


class JobSpec(SpecModel):
    """A job: optional noise pretraining, then optional training on data.

    ``kind="pretrain"`` runs only the ``pretrain`` block; ``kind="train"`` runs the optional
    ``pretrain`` block and then ``train``. ``init_from`` starts from a finished job's weights
    and feedback matrices (a checkpoint path for the CLI, a job id for the API).
    """

    kind: Literal["pretrain", "train"] = Field(description="`pretrain` or `train`.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    pretrain: PretrainSpec | None = None
    train: TrainSpec | None = None
    init_from: str | None = Field(
        None,
        max_length=4096,
        description="Start from these weights and feedback matrices: a succeeded job's id "
        "(its final checkpoint), `checkpoint:<id>` (an upload, `POST /v1/checkpoints`), or for "
        "`noisefa run` a checkpoint file. The model must have the checkpoint's shape.",
    )
    device: DeviceName = Field("auto", description="`cpu`, `cuda`, or `auto` (cuda if present).")
    checkpoint_every: int = Field(1, ge=1, description="Write a checkpoint every N epochs.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    time_limit_s: int | None = Field(
        None,
        ge=1,
        le=MAX_TIME_LIMIT_S,
        description="Wall-clock seconds this job may run (a worker stops it at the next step "
        "past it, keeps its checkpoint and fails it `time_limit`); the deployment's "
        "`max_job_seconds` applies when unset or smaller. Counted from the first attempt's "
        "start. Does not change results, so a resume ignores it.",
    )
    notify: NotifySpec | None = Field(None, description="Webhook for this job's state changes.")

    @model_validator(mode="after")
    def _phases_match_kind(self, info: ValidationInfo) -> JobSpec:
        if self.kind == JobKind.PRETRAIN:
            if self.pretrain is None:
                raise ValueError("pretrain: required when kind is 'pretrain'")
            if self.train is not None:
                raise ValueError("train: not allowed when kind is 'pretrain'; use kind 'train'")
            if self.pretrain.dataset is None:
                raise ValueError(
                    "pretrain.dataset: required when kind is 'pretrain' "
                    "(it gives the noise's input shape and class count)"
                )
        if self.kind == JobKind.TRAIN and self.train is None:
            raise ValueError("train: required when kind is 'train'")
        limits = (info.context or {}).get("limits") or Limits()
        limits.check(self)
        return self

    @property
    def shape_dataset(self) -> str:
        """The dataset that fixes the network's input shape and class count."""
        if self.pretrain is not None and self.pretrain.dataset is not None:
            return self.pretrain.dataset
        assert self.train is not None, "a validated spec has pretrain.dataset or train"
        return self.train.dataset

    def phases(self) -> list[str]:
        """Names of the phases this job runs, in order."""
        names = ["pretrain"] if self.pretrain is not None else []
        return names + (["train"] if self.train is not None else [])

    def fingerprint(self, *, ignore: tuple[str, ...] = ("device", "time_limit_s", "notify")) -> str:
        """A hash of what decides the results (device, time limit and webhook excluded), to
        match resumes to specs."""
        data: dict[str, Any] = self.model_dump(mode="json")
        for key in ignore:
            data.pop(key, None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_spec(data: Any, limits: Limits | None = None) -> JobSpec:
    """Validate a raw spec (a dict from JSON/YAML) against the given limits."""
    return JobSpec.model_validate(data, context={"limits": limits or Limits()})
