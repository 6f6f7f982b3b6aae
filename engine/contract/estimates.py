"""How much device memory and compute a job needs, estimated from its spec before it runs.

Pure arithmetic, no torch: the API refuses at submit a job over ``max_job_memory_bytes`` or
``max_job_compute``, so one that cannot fit or finish never takes a worker. The formulas
count the engine's dominant terms (float32 tensors, int64 labels), not every byte; each term
names the spec field that drives it, so a refusal can say what to shrink.

With ``P`` parameters (weights, biases, batch-norm affine), ``F`` feedback entries (by
``model.rule``: fa, frsf and kp one per weight entry; dfa classes × each layer's input, its
buffers being (classes, input) rather than (out, in); bp, usf and brsf none), ``M = Σ in·out``
multiply-adds of one sample's forward pass, and per sample
``A = input + 2·Σ hidden (3· with batch norm) + 2·widest + 2·classes`` floats a training
sample holds at the backward's peak (each layer's output and activation, the gradient
buffers of the widest layer, the logits and their softmax; within ~10% of the peak
resident memory measured on CPU for wide and deep MLPs):

**Memory** (bytes) = resident + the largest phase's working set, where
  - resident = 4·(P + F + batch-norm statistics) + the training dataset on the device
    (train + test samples × (4·input + 8)) + the fixed readout noise (4·readout_size·input)
    + each phase's meta-loss tasks (their splits, and copies fitted to the model's input);
  - working set = 4·P gradients + the optimizer's state (Adam 8·P, SGD with momentum 4·P,
    plain SGD 0) + for kp, whose feedback trains like a weight, the same gradient and state
    for its F entries + for brsf, its per-batch draws (4 bytes per weight entry) + the
    largest of: one training batch (4·batch·A), the signal-angle probe
    (4·probe_size·A), one evaluation batch (4·eval_batch·3·widest layer), a meta-loss
    adaptation (a copy of the model with its gradients and optimizer state, plus its
    batch), the singular values of the largest weight (float64, 3 copies).

**Compute** (multiply-adds) = per phase
  - training: 3·M (the forward product and the backward's two) × samples per epoch (noise:
    ``samples_per_epoch``; data: the train split) × epochs;
  - metrics, at each of the epochs + 1 measurements: forward passes over the readout noise
    and (data phases) the test split, 6·M per probe sample (the rule's and the true
    gradient), and each layer's SVD (min(in, out)²·max(in, out)); data phases also evaluate
    the train split once before the first step;
  - meta-loss, at each measurement: per task, ``steps`` × batch × 3·M plus a forward pass
    over its ``eval_size`` held-out samples.

Conv blocks (``model.conv``) add to ``M`` each block's ``out·in·k²·H·W`` multiply-adds, to
``P`` its kernel entries (and to ``F`` as its rule says: a dfa buffer per conv layer is
classes × the layer's input map), and to ``A`` per block three maps of its output (conv
output, activation, their gradient) and the pooled map; a kernel's SVD is of its
``(out, in·k²)`` matrix.

An ``evaluate`` job needs the model, the largest dataset with copies of its test split
(shifted, and fitted to the model's input where the shapes differ) and one evaluation batch;
its compute is one forward pass over each test split per severity. An experiment is
estimated child by child: each child must fit the per-job limits (it runs as its own job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .evaluate_spec import EvaluateSpec
from .network_size import (
    FLOAT_BYTES,
    DatasetSize,
    Network,
    builtin_size,
    builtin_sizes,
)
from .spec import (
    JobSpec,
    MetaLossSpec,
    MetricsSpec,
    ModelSpec,
    OptimizerSpec,
    PretrainSpec,
    TrainSpec,
)

# The sizes live in .network_size; importers of the estimates read them here too.
__all__ = [
    "DatasetSize",
    "Estimate",
    "Network",
    "Term",
    "builtin_size",
    "builtin_sizes",
    "estimate_evaluation",
    "estimate_job",
    "optimizer_state_floats",
]


@dataclass(frozen=True)
class Term:
    """One share of an estimate: how much, what it is, and the spec field that drives it."""

    field: str
    what: str
    amount: int


@dataclass(frozen=True)
class Estimate:
    """A job's estimated peak device memory (bytes) and compute (multiply-adds).

    Each total is the sum of its terms; ``largest_*`` names the term a refusal points at.
    """

    memory_terms: tuple[Term, ...]
    compute_terms: tuple[Term, ...]

    @property
    def memory_bytes(self) -> int:
        return sum(term.amount for term in self.memory_terms)

    @property
    def compute(self) -> int:
        return sum(term.amount for term in self.compute_terms)

    @property
    def largest_memory(self) -> Term:
        return max(self.memory_terms, key=lambda term: term.amount)

    @property
    def largest_compute(self) -> Term:
        return max(self.compute_terms, key=lambda term: term.amount)


def optimizer_state_floats(optimizer: OptimizerSpec, parameters: int) -> int:
    """Floats of optimizer state: Adam's two moments, SGD's momentum buffer, or none."""
    if optimizer.name == "adam":
        return 2 * parameters
    return parameters if optimizer.momentum > 0 else 0


def estimate_job(spec: JobSpec, sizes: Mapping[str, DatasetSize]) -> Estimate:
    """The estimate of a pretrain or train job; ``sizes`` holds every dataset it reads."""
    net = Network.of(spec.model, sizes[spec.shape_dataset])
    data = sizes[spec.train.dataset] if spec.train is not None else None
    readout = FLOAT_BYTES * spec.metrics.readout_size * net.input_size
    memory = [
        Term("model.hidden", "weights, biases and feedback matrices", net.state_bytes),
        Term("metrics.readout_size", "the fixed readout noise", readout),
    ]
    if data is not None:
        memory.append(Term("train.dataset", "the training dataset", data.device_bytes))
    compute: list[Term] = []
    working: list[list[Term]] = []
    for phase in spec.phases():
        block = spec.pretrain if phase == "pretrain" else spec.train
        assert block is not None, "phases() names only the blocks a spec has"
        phase_data = data if phase == "train" else None
        if block.meta_loss is not None:  # every phase loads its own task copies
            memory.append(_meta_data(f"{phase}.meta_loss.tasks", block.meta_loss, net, sizes))
        working.append(_working_set(phase, block, net, spec.metrics, phase_data))
        compute += _phase_compute(phase, block, net, spec.metrics, phase_data, sizes)
    memory += max(working, key=lambda terms: sum(term.amount for term in terms))
    return Estimate(tuple(memory), tuple(compute))


def estimate_evaluation(
    spec: EvaluateSpec, model: ModelSpec, shape: DatasetSize, datasets: Mapping[str, DatasetSize]
) -> Estimate:
    """The estimate of an evaluate job of a model (``model`` on data shaped like ``shape``)
    against ``datasets`` (name → size, the datasets the job evaluates on)."""
    net = Network.of(model, shape)
    severities = sum(len(values) for values in spec.shifts.values())
    biggest = max(datasets.values(), key=lambda size: size.device_bytes)
    shifted = FLOAT_BYTES * biggest.test_size * net.input_size
    copies = net.fitted_bytes(biggest, biggest.test_size) + shifted
    batch = min(spec.eval_batch_size, biggest.test_size)
    memory = (
        Term("init_from", "the model's weights and feedback matrices", net.state_bytes),
        Term(
            "datasets",
            "the largest dataset and copies of its test split",
            biggest.device_bytes + copies,
        ),
        Term("eval_batch_size", "one evaluation batch", FLOAT_BYTES * batch * net.eval_per_sample),
    )
    forward = sum(size.test_size for size in datasets.values()) * severities * net.macs
    return Estimate(memory, (Term("shifts", "forward passes per severity", forward),))


def _samples_per_epoch(block: PretrainSpec | TrainSpec, data: DatasetSize | None) -> int:
    """Noise: ``samples_per_epoch``; data: the train split."""
    if data is not None:
        return data.train_size
    assert isinstance(block, PretrainSpec), "a data phase has its dataset's size"
    return block.samples_per_epoch


def _working_set(
    phase: str,
    block: PretrainSpec | TrainSpec,
    net: Network,
    metrics: MetricsSpec,
    data: DatasetSize | None,
) -> list[Term]:
    """What one phase holds while it steps: gradients, optimizer state, and its largest
    transient (a batch, the probe, an evaluation batch, a meta-loss adaptation or an SVD)."""
    batch = min(block.batch_size, _samples_per_epoch(block, data))
    evaluated = max(metrics.readout_size, data.train_size if data is not None else 0)
    eval_batch = FLOAT_BYTES * min(metrics.eval_batch_size, evaluated) * net.eval_per_sample
    transients = [
        Term(
            f"{phase}.batch_size", "one training batch", FLOAT_BYTES * batch * net.kept_per_sample
        ),
        Term(
            "metrics.probe_size",
            "the signal-angle probe batch",
            FLOAT_BYTES * metrics.probe_size * net.kept_per_sample,
        ),
        Term("metrics.eval_batch_size", "one evaluation batch", eval_batch),
        Term("model.hidden", "the largest weight's singular values", net.svd_bytes),
    ]
    meta = block.meta_loss
    if meta is not None:
        learner = net.state_bytes + FLOAT_BYTES * net.trained_entries  # copy and gradients
        learner += FLOAT_BYTES * optimizer_state_floats(
            OptimizerSpec(name=meta.optimizer), net.trained_entries
        )
        step = FLOAT_BYTES * meta.batch_size * net.kept_per_sample
        held_out = FLOAT_BYTES * min(metrics.eval_batch_size, meta.eval_size) * net.eval_per_sample
        adaptation = learner + max(step, held_out)
        transients.append(Term(f"{phase}.meta_loss", "a meta-loss adaptation", adaptation))
    state = FLOAT_BYTES * optimizer_state_floats(block.optimizer, net.parameters)
    terms = [
        Term("model.hidden", "gradients", FLOAT_BYTES * net.parameters),
        Term(f"{phase}.optimizer", "optimizer state", state),
    ]
    trained_feedback = net.trained_entries - net.parameters
    if trained_feedback:  # KP: B has a gradient and optimizer state, like a weight
        feedback_state = optimizer_state_floats(block.optimizer, trained_feedback)
        amount = FLOAT_BYTES * (trained_feedback + feedback_state)
        terms.append(Term("model.rule", "the trained feedback's gradients and state", amount))
    if net.draw_entries:
        draws = FLOAT_BYTES * net.draw_entries
        terms.append(Term("model.rule", "the per-batch feedback draws", draws))
    return [*terms, max(transients, key=lambda term: term.amount)]


def _phase_compute(
    phase: str,
    block: PretrainSpec | TrainSpec,
    net: Network,
    metrics: MetricsSpec,
    data: DatasetSize | None,
    sizes: Mapping[str, DatasetSize],
) -> list[Term]:
    """Multiply-adds of one phase: its steps, its per-epoch metrics, its meta-loss."""
    training = 3 * net.macs * _samples_per_epoch(block, data) * block.epochs
    forward = metrics.readout_size + (data.test_size if data is not None else 0)
    measurement = net.macs * (forward + 6 * metrics.probe_size) + net.svd_macs
    measured = measurement * (block.epochs + 1)
    if data is not None:
        measured += net.macs * data.train_size  # epoch 0 on the whole train split
    terms = [
        Term(phase, f"{phase} steps", training),
        Term("metrics", f"{phase} per-epoch metrics", measured),
    ]
    meta = block.meta_loss
    if meta is not None:
        adapt = _meta_macs(meta, net, sizes) * _measurements(meta, block.epochs)
        terms.append(Term(f"{phase}.meta_loss", f"{phase} meta-loss", adapt))
    return terms


def _meta_data(
    field: str, meta: MetaLossSpec, net: Network, sizes: Mapping[str, DatasetSize]
) -> Term:
    """A phase's meta-loss tasks on the device: their splits plus copies fitted to the model."""
    total = 0
    for name in dict.fromkeys(meta.tasks):
        task = sizes[name]
        fitted = task.train_size + min(meta.eval_size, task.test_size)
        total += task.device_bytes + net.fitted_bytes(task, fitted)
    return Term(field, "the meta-loss tasks", total)


def _meta_macs(meta: MetaLossSpec, net: Network, sizes: Mapping[str, DatasetSize]) -> int:
    """Multiply-adds of one meta-loss measurement over all its tasks."""
    total = 0
    for name in meta.tasks:
        task = sizes[name]
        steps = meta.steps * min(meta.batch_size, task.train_size) * 3 * net.macs
        total += steps + min(meta.eval_size, task.test_size) * net.macs
    return total


def _measurements(meta: MetaLossSpec, epochs: int) -> int:
    """Meta-loss measurements in a phase: epoch 0, every ``every`` epochs, and the last."""
    return epochs // meta.every + 1 + (1 if epochs % meta.every else 0)
