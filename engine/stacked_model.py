"""R MLPs of one shape as stacked tensors, with an explicit forward and rule backward.

A training step of R runs is one ``baddbmm`` per layer forward and two ``bmm`` per layer
backward, whatever R is: at these sizes a step's cost is mostly per-op dispatch, so skipping
the autograd engine and stacking runs both pay. The backward uses the formulas of
:class:`~.rules.FeedbackLinearFunction` (``grad_x = g @ M``, ``grad_W = g^T @ x``,
``grad_b = sum(g)``), where each run's ``M`` comes from its rule class
(:class:`~.stacked_rules.StackedFeedback`); a direct rule (DFA) sends the output error,
not the layer's own, through it. Batch norm's backward is the exact one, as autograd
computes it for the single-run model. Parameters (and, with a KP run, every layer's
feedback) are views into one flat buffer laid out by
:class:`~.stacked_params.StackedParameters`; a trained feedback view receives the weight's
gradient each step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import MLP
from .rules import RULES
from .stacked_params import StackedParameters
from .stacked_rules import StackedFeedback

# d(activation)/d(input) from the activation's output, which the forward pass keeps anyway.
# ReLU's is autograd's own kernel: one pass, where ``grad * (out > 0)`` is two and a cast.
ACTIVATION_GRADS = {
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0),
    "tanh": lambda grad, out: grad * (1 - out * out),
}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class StackedMLP(StackedParameters):
    """The weights of R runs (``weights[i]``: (R, out, in)) and one step's gradients.

    Built from each run's :class:`~.model.MLP` (the runs' source of truth between phases
    and for metrics); :meth:`write_back` copies the stacked values into them. The layout
    of :attr:`params` is :class:`~.stacked_params.StackedParameters`'.
    ``draw_generators[r]`` is run ``r``'s generator of brSF draws (unused by other rules).
    """

    def __init__(self, models: Sequence[MLP], draw_generators: Sequence[torch.Generator]):
        rules = [RULES[m.config.rule].rule for m in models]
        super().__init__(models, rules)
        config = models[0].config
        depth, n = self.depth, self.num_params
        self.activation = ACTIVATIONS[config.activation]
        self.activation_grad = ACTIVATION_GRADS[config.activation]
        assert len({rule.direct for rule in rules}) == 1, "direct rules stack only together"
        self.direct = rules[0].direct
        views, grads = self.params.views, self.grads.views
        self.weights, self.biases = views[0 : 2 * depth : 2], views[1 : 2 * depth : 2]
        # The forward's operands, as views made once: the optimizer updates the weights in
        # place, so these stay current, and a step of small layers is mostly per-op cost.
        self.weights_t = [w.transpose(1, 2) for w in self.weights]  # (R, in, out)
        self.bias_rows = [b.unsqueeze(1) for b in self.biases]  # (R, 1, out)
        self.minus_ones: dict[torch.Size, torch.Tensor] = {}  # the targets' -1/B, per shape
        self.weight_grads, self.bias_grads = grads[0 : 2 * depth : 2], grads[1 : 2 * depth : 2]
        self.batch_norm = config.batch_norm
        if self.batch_norm:
            norm = models[0].norms[0]
            self.bn_eps, self.bn_momentum = norm.eps, norm.momentum
            # Bounded by n: KP's feedback views follow the parameters.
            self.bn_weights, self.bn_biases = views[2 * depth : n : 2], views[2 * depth + 1 : n : 2]
            self.bn_weight_grads = grads[2 * depth : n : 2]
            self.bn_bias_grads = grads[2 * depth + 1 : n : 2]
            self.bn_buffers = [
                {
                    name: torch.stack([getattr(m.norms[j], name).detach() for m in models]).clone()
                    for name in ("running_mean", "running_var", "num_batches_tracked")
                }
                for j in range(depth - 1)
            ]
        if self.trains_feedback:
            self.feedback, self.feedback_grads = self.feedback_views, grads[n:]
        elif any(rule.buffer_name for rule in rules):
            self.feedback = [torch.stack([own[i] for own in self.buffers]) for i in range(depth)]
        else:
            self.feedback = [None] * depth
        self.rules = StackedFeedback(
            rules,
            self.weights,
            self.feedback,
            draw_generators,
            [m.config.feedback_scale for m in models],
        )

    def step_gradients(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's gradients into :attr:`grads`; return logits and per-run loss sums.

        Nothing it touches requires grad, so autograd records nothing whatever the grad mode
        (the trainer's phase runs under ``no_grad`` once, not per call).

        ``x`` (R, B, *input); ``target`` (R, B) class indices or (R, B, C) probabilities.
        Each run's gradient is that of its mean cross-entropy over the batch, as in
        ``F.cross_entropy``; the loss returned is the batch's sum (what the epoch's mean adds
        up, without a division per step).
        Batch-norm running statistics are updated as ``nn.BatchNorm1d`` does in train mode.
        """
        batch = x.shape[1]
        h = x.flatten(2)  # (R, B, features)
        inputs, normed, outputs = [], [], []
        last = self.depth - 1
        for i in range(self.depth):
            inputs.append(h)
            # (R, B, in) @ (R, in, out) + (R, 1, out) -> (R, B, out)
            h = torch.baddbmm(self.bias_rows[i], h, self.weights_t[i])
            if i < last:
                if self.batch_norm:
                    h, xhat, rstd = self._norm_forward(i, h)
                    normed.append((xhat, rstd))
                h = self.activation(h)
                outputs.append(h)
        logits = h  # (R, B, C)
        # Softmax and the log of its normaliser from one max, one exp and one sum: at C ~ 10
        # classes, torch's log_softmax kernel costs ~10 us per run of the stack on a CPU core,
        # where these reductions cost a few us for the whole stack.
        shifted = logits - logits.amax(2, keepdim=True)  # (R, B, C)
        exps = shifted.exp()
        totals = exps.sum(2, keepdim=True)  # (R, B, 1)
        if target.dim() == 2:
            index = target.unsqueeze(2)  # (R, B, 1)
            # -log p(target) = log(total) - shifted[target], summed over the batch
            losses = (totals.log() - shifted.gather(2, index)).sum((1, 2))  # (R,)
            # d(mean loss)/d(logits) = (softmax - onehot) / B
            grad = exps.div_(totals.mul_(batch))
            if index.shape not in self.minus_ones:
                self.minus_ones[index.shape] = torch.full_like(index, -1 / batch, dtype=grad.dtype)
            grad.scatter_add_(2, index, self.minus_ones[index.shape])
        else:
            losses = -(target * (shifted - totals.log())).sum((1, 2))  # (R,)
            grad = exps.div_(totals).sub_(target).div_(batch)
        output_error = grad  # (R, B, C): what a direct rule sends to every layer
        for i in range(last, -1, -1):
            # (R, out, B) @ (R, B, in) -> (R, out, in)
            torch.bmm(grad.transpose(1, 2), inputs[i], out=self.weight_grads[i])
            torch.sum(grad, 1, out=self.bias_grads[i])  # (R, out)
            if self.trains_feedback:
                self.feedback_grads[i].copy_(self.weight_grads[i])  # KP: B's gradient is W's
            if i > 0:
                source = output_error if self.direct else grad
                # (R, B, out|C) @ (R, out|C, in) -> (R, B, in): the error the rule sends back
                grad = self.activation_grad(torch.bmm(source, self.rules.matrix(i)), outputs[i - 1])
                if self.batch_norm:
                    grad = self._norm_backward(i - 1, grad, *normed[i - 1])
        return logits, losses

    def _norm_forward(
        self, j: int, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch norm of hidden layer ``j`` on (R, B, W) over B, per run; updates buffers."""
        batch = h.shape[1]
        var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)  # (R, 1, W)
        rstd = torch.rsqrt(var + self.bn_eps)
        xhat = (h - mean) * rstd  # (R, B, W)
        buffers = self.bn_buffers[j]
        buffers["running_mean"].lerp_(mean.squeeze(1), self.bn_momentum)
        buffers["running_var"].lerp_(var.squeeze(1) * (batch / (batch - 1)), self.bn_momentum)
        buffers["num_batches_tracked"].add_(1)
        out = torch.addcmul(self.bn_biases[j].unsqueeze(1), xhat, self.bn_weights[j].unsqueeze(1))
        return out, xhat, rstd

    def _norm_backward(
        self, j: int, grad: torch.Tensor, xhat: torch.Tensor, rstd: torch.Tensor
    ) -> torch.Tensor:
        """d(loss)/d(input) of batch norm ``j`` from d(loss)/d(output); sets its grads.

        With ``ĝ = g·γ``: ``dx = (ĝ - mean(ĝ) - x̂·mean(ĝ·x̂)) · rstd``, means over the batch.
        """
        torch.sum(grad * xhat, 1, out=self.bn_weight_grads[j])  # (R, W)
        torch.sum(grad, 1, out=self.bn_bias_grads[j])  # (R, W)
        g_hat = grad * self.bn_weights[j].unsqueeze(1)  # (R, B, W)
        mean_g = g_hat.mean(1, keepdim=True)
        mean_gx = (g_hat * xhat).mean(1, keepdim=True)
        return (g_hat - mean_g - xhat * mean_gx) * rstd

    @torch.no_grad()
    def write_back(self, models: Sequence[MLP]) -> None:
        """Copy run ``r``'s slice of every stacked tensor into ``models[r]``."""
        self.write_back_parameters(models)
        if self.batch_norm:
            for r, model in enumerate(models):
                for norm, buffers in zip(model.norms, self.bn_buffers, strict=True):
                    for name, stacked in buffers.items():
                        getattr(norm, name).copy_(stacked[r])
