"""The training loop: phases of epochs of steps for a stack of R ≥ 1 runs (one job is R = 1).

Each phase trains the runs that have it as one stacked computation (:mod:`.stacked_model`,
:mod:`.stacked_optim`), batches from each run's own data order or noise (:mod:`.batches`),
the step captured in a CUDA graph where possible (:mod:`.step_runner`). Steps never sync
with the host: per-run loss and accuracy are summed on the device and read once per epoch.
Then every run's weights are copied back into its own model, measured and checkpointed as
its own (:class:`~.member.Member`). A run whose ``should_stop`` says so (checkpoint, then
:class:`RunStopped`) or whose epoch loss is not finite (:class:`TrainingDiverged`) leaves
the stack; so does one whose test accuracy has converged (``train.early_stop``), having
finished the phase with its final checkpoint. The others go on unchanged. Every random
choice comes from a per-run generator whose state is checkpointed, so a stopped or killed
run resumes to exactly the same metrics.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from .batches import DataBatches, NoiseBatches
from .checkpoint import PHASE_ORDER, Checkpoint
from .contract.errors import RunStopped, TrainingDiverged
from .contract.spec import OptimizerSpec
from .member import Member, Phase, derive_seed
from .prefetch import StepBatches, prefetch_enabled
from .rules import RULES
from .stacked_optim import StackedOptimizer
from .stacking import stack_models
from .step_runner import make_step_runner

log = logging.getLogger(__name__)

__all__ = ["Phase", "derive_seed", "make_optimizer", "train_stack"]


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer:
    """A torch Adam or SGD from a phase's settings, for code that trains a plain module
    (meta-loss adaptation); the stacked loop uses :class:`~.stacked_optim.StackedOptimizer`."""
    if spec.name == "adam":
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=True
        )
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, fused=True
    )


def train_stack(
    members: Sequence[Member], resumes: Sequence[Checkpoint | None]
) -> list[BaseException | None]:
    """Run every member's phases not yet done; per member ``None`` (finished) or why it left.

    Within a phase, members that fit together (:func:`_stack_key`) train as one stack;
    members that do not (another shape, batch size, resume point, ...) train in stacks
    of their own, one after another.
    """
    outcomes: dict[int, BaseException] = {}
    for member, resume in zip(members, resumes, strict=True):
        if resume is not None:
            member.progress = replace(
                resume.progress, phases_done=list(resume.progress.phases_done)
            )
            member.last_checkpoint = resume.path
        member.metrics_log.rewrite(member.progress.history)
    for name in PHASE_ORDER:
        active = [
            i
            for i, m in enumerate(members)
            if i not in outcomes and name in m.phases and name not in m.progress.phases_done
        ]
        stacks: dict[tuple, list[int]] = {}
        for i in active:
            here = resumes[i] if _resumes_in(resumes[i], name) else None
            stacks.setdefault(_stack_key(members[i], name, here), []).append(i)
        for group in stacks.values():
            here = [resumes[i] if _resumes_in(resumes[i], name) else None for i in group]
            left = PhaseStack(name, [members[i] for i in group], here).run()
            outcomes |= {group[k]: exc for k, exc in left.items()}
    return [outcomes.get(i) for i in range(len(members))]


def _resumes_in(resume: Checkpoint | None, phase: str) -> bool:
    return resume is not None and resume.progress.phase == phase


def _stack_key(member: Member, phase: str, resume: Checkpoint | None) -> tuple:
    """Runs with equal keys train ``phase`` as one stack: one network shape, one device,
    one batch plan and optimizer (lr aside), one error path (a direct rule's feedback has
    another shape), and one starting point."""
    config = member.model.config
    shape = (
        config.input_shape,
        config.num_classes,
        tuple(config.conv),
        config.kernel_size,
        tuple(config.hidden),
        config.activation,
    )
    start = None if resume is None else (resume.progress.epoch, resume.progress.step)
    return (
        member.phases[phase].stack_key(),
        shape,
        config.batch_norm,
        RULES[config.rule].rule.direct,
        str(member.device),
        start,
    )


class PhaseStack:
    """One phase of a stack of members, from a fresh start or one shared resume point."""

    def __init__(self, name: str, members: list[Member], resumes: list[Checkpoint | None]):
        self.name = name
        self.members = members
        self.ids = list(range(len(members)))  # each stacked run's index in ``members``
        self.phases = [m.phases[name] for m in members]
        self.plan = plan = self.phases[0]
        keys = {phase.stack_key() for phase in self.phases}
        assert len(keys) == 1, f"members of one stack must share the phase's plan: {keys}"
        self.device = members[0].device
        self.orders = [
            torch.Generator().manual_seed(derive_seed(m.spec.model.seed, f"{name}/order"))
            for m in members
        ]
        for member, phase in zip(members, self.phases, strict=True):
            if phase.noise is not None:
                phase.noise.generator.manual_seed(
                    derive_seed(member.spec.model.seed, f"{name}/noise")
                )
            member.probe = member.probe_batch(phase)
        runs = len(members)
        self.loss_sum = torch.zeros(runs, dtype=torch.float64, device=self.device)
        self.correct = torch.zeros(runs, dtype=torch.int64, device=self.device)
        # Each run's brSF draws: its own device generator, seeded per phase from the
        # feedback seed (as the single-run layers' draws are), checkpointed.
        self.draws = [
            torch.Generator(device=self.device).manual_seed(
                derive_seed(m.spec.model.resolved_feedback_seed, f"{name}/feedback")
            )
            for m in members
        ]
        self.model = stack_models([m.model for m in members], self.draws)
        lrs = [phase.optimizer.lr for phase in self.phases]
        self.optimizer = StackedOptimizer(
            plan.optimizer,
            self.model.params,
            self.model.grads,
            lrs,
            frozen=self.model.frozen_views,
            run_views=self.model.run_views,
        )
        # Weighed once, for the runs the phase starts with (a stack only shrinks).
        noise = plan.dataset is None
        shape = self.phases[0].noise.input_shape if noise else plan.dataset.input_shape
        elements = len(self.phases) * plan.batch_size * math.prod(shape)
        prefetch = prefetch_enabled(self.device, noise=noise, elements=elements)
        if plan.dataset is not None:
            source: DataBatches | NoiseBatches = DataBatches(plan.dataset, self.orders)
        else:  # a batch drawn ahead needs buffers of its own
            source = NoiseBatches([phase.noise for phase in self.phases], 2 if prefetch else 1)
        self.source = StepBatches(source, prefetch=prefetch)
        self.runners: dict[int, object] = {}
        self.epoch = self.step = 0
        if any(resume is not None for resume in resumes):
            self._resume(resumes)
        else:
            for member, phase in zip(members, self.phases, strict=True):
                member.record_initial(phase)
        for member, phase in zip(members, self.phases, strict=True):
            member.callbacks.on_phase_start(name, phase.epochs, phase.steps_per_epoch)

    def _resume(self, resumes: list[Checkpoint | None]) -> None:
        positions = {(c.progress.epoch, c.progress.step) if c else None for c in resumes}
        assert len(positions) == 1, f"a stack resumes from one position, not {positions}"
        for r, checkpoint in enumerate(resumes):
            self.optimizer.load_run_state(
                r, checkpoint.section("optim"), checkpoint.optimizer_scalars
            )
            self.orders[r].set_state(checkpoint.tensors["rng.order"])
            if "rng.feedback" in checkpoint.tensors:  # absent before issue 13's rules
                self.draws[r].set_state(checkpoint.tensors["rng.feedback"])
            if self.phases[r].noise is not None:
                self.phases[r].noise.generator.set_state(checkpoint.tensors["rng.noise"])
            self.loss_sum[r].copy_(checkpoint.tensors["extra.loss_sum"])
            self.correct[r].copy_(checkpoint.tensors["extra.correct"])
        self.epoch, self.step = resumes[0].progress.epoch, resumes[0].progress.step
        log.info(
            "resuming %s of %d run(s) at epoch %d step %d",
            self.name,
            len(resumes),
            self.epoch,
            self.step,
        )

    # --------------------------------------------------------------------------------- loop
    @torch.no_grad()  # once for the phase: the step's own calls skip the per-call toggle
    def run(self) -> dict[int, BaseException]:
        """Train the phase; the members (by index) that left the stack, and why. The cached
        steps (and a CUDA graph's memory pool) go when it returns: they refer back to the
        stack, so they would otherwise keep it alive into the next phase."""
        try:
            return self._run()
        finally:
            self.runners = {}
            self.source.close()

    def _run(self) -> dict[int, BaseException]:
        plan, left = self.plan, {}
        while self.ids and self.epoch < plan.epochs:
            order_states = [g.get_state() for g in self.orders]  # redraws this epoch's order
            sizes = plan.batch_sizes()[self.step :]
            self.source.start_epoch(self.step * plan.batch_size, sizes)
            for step, size in enumerate(sizes, start=self.step + 1):
                self._runner(size)()
                stopping = [r for r in range(len(self.ids)) if self._polls_stop(r, step)]
                if stopping:
                    left |= self._stop(stopping, step, order_states)
                    if not self.ids:
                        return left
            self.step = 0
            self.epoch += 1
            left |= self._end_epoch()
        return left

    def _polls_stop(self, r: int, step: int) -> bool:
        member = self.members[self.ids[r]]
        member.callbacks.on_progress(self.name, self.epoch + 1, step, self.plan.steps_per_epoch)
        return member.callbacks.should_stop()

    def _runner(self, size: int):
        """The step for batches of ``size`` (the last batch of an epoch may be smaller)."""
        if size not in self.runners:
            generators = [*self.source.generators, *self.model.rules.used_generators]
            step = functools.partial(self._step, size)
            self.runners[size] = make_step_runner(step, self.device, generators)
        return self.runners[size]

    def _step(self, size: int) -> None:
        """One step of every run: batch, forward, rule backward, update, sums. No host sync."""
        x, labels, target = self.source.next(size)  # (R, B, *in), (R, B), (R, B[, C])
        logits, loss_sums = self.model.step_gradients(x, target)  # (R, B, C), (R,)
        self.optimizer.step()
        self.loss_sum.add_(loss_sums)
        self.correct.add_((logits.argmax(2) == labels).sum(1))

    def _end_epoch(self) -> dict[int, BaseException]:
        """Copy weights back, measure and checkpoint each run; diverged runs leave (with
        why), converged runs (``train.early_stop``) leave having finished the phase."""
        plan, samples = self.plan, self.plan.samples_per_epoch
        models = [self.members[i].model for i in self.ids]
        self.model.write_back(models)
        losses = (self.loss_sum / samples).tolist()
        accuracies = (self.correct.double() / samples).tolist()
        self.loss_sum.zero_()
        self.correct.zero_()
        diverged: dict[int, BaseException] = {}
        converged: list[int] = []  # stopped early, successfully, final checkpoint written
        # Every run's epoch is recorded before any checkpoint is written: a checkpoint's
        # callback may wait for the epochs handed over before it (the worker's), and so
        # waits once for all of them, not once for each.
        recorded: list[int] = []
        for r, index in enumerate(self.ids):
            member, phase = self.members[index], self.phases[index]
            member.progress.epoch, member.progress.step = self.epoch, 0
            if not math.isfinite(losses[r]):
                diverged[r] = TrainingDiverged(
                    f"{self.name} epoch {self.epoch}: the train loss is {losses[r]}; the run "
                    "diverged (a smaller learning rate may help)"
                )
                continue
            member.record_epoch(phase, losses[r], accuracies[r])
            recorded.append(r)
        for r in recorded:
            member, phase = self.members[self.ids[r]], self.phases[self.ids[r]]
            last = self.epoch == plan.epochs or member.converged(phase)
            if last:
                member.progress.phases_done.append(self.name)
                if self.epoch < plan.epochs:
                    converged.append(r)
            if self.epoch % member.spec.checkpoint_every == 0 or last:
                member.save(
                    phase,
                    self.optimizer.run_state(r),
                    self.orders[r].get_state(),
                    self.loss_sum[r],
                    self.correct[r],
                    draw_state=self.draws[r].get_state(),
                )
        left = {self.ids[r]: exc for r, exc in diverged.items()}
        for r, exc in diverged.items():
            self.members[self.ids[r]].end(exc)
        for r in converged:  # done unless a later phase is still to train
            if self.members[self.ids[r]].done:
                self.members[self.ids[r]].end()
        if diverged or converged:
            self._remove([*diverged, *converged])
        return left

    def _stop(
        self, stopping: list[int], step: int, order_states: list[torch.Tensor]
    ) -> dict[int, BaseException]:
        """Checkpoint the runs that asked to stop mid-epoch, then take them off the stack."""
        self.source.settle()  # the noise drawn ahead for the next step is not in a checkpoint
        self.model.write_back([self.members[i].model for i in self.ids])
        stopped: dict[int, BaseException] = {}
        for r in stopping:
            member, phase = self.members[self.ids[r]], self.phases[self.ids[r]]
            member.progress.epoch, member.progress.step = self.epoch, step
            path = member.save(
                phase,
                self.optimizer.run_state(r),
                order_states[r],
                self.loss_sum[r],
                self.correct[r],
                draw_state=self.draws[r].get_state(),
            )
            stopped[self.ids[r]] = RunStopped(
                f"stopped in {self.name} epoch {self.epoch + 1} step {step}; checkpoint {path}"
            )
            member.end(stopped[self.ids[r]])
        keep = [r for r in range(len(self.ids)) if r not in stopping]
        order_states[:] = [order_states[r] for r in keep]
        self._remove(stopping)
        return stopped

    def _remove(self, runs: list[int]) -> None:
        """Rebuild the stack without the stacked runs ``runs`` (weights, state, sources)."""
        keep = [r for r in range(len(self.ids)) if r not in runs]
        self.ids = [self.ids[r] for r in keep]
        self.orders = [self.orders[r] for r in keep]
        self.draws = [self.draws[r] for r in keep]
        self.runners = {}
        if not self.ids:
            return
        index = torch.tensor(keep, device=self.device)
        self.loss_sum = self.loss_sum.index_select(0, index)
        self.correct = self.correct.index_select(0, index)
        self.model = stack_models([self.members[i].model for i in self.ids], self.draws)
        self.optimizer = self.optimizer.take(keep, self.model.params, self.model.grads)
        self.source = self.source.take(keep)
