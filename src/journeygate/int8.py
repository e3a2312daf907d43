"""Int8 linear layers for MiniLM on the CPU, exact per token.

A transformer forward pass on a small CPU is mostly its linear layers. Int8 matrix products
do them about three times faster than float32. PyTorch's own dynamic quantisation scales the
activations of a whole pass with one number, so a sentence's vector would depend on what else
shares the pass (its micro-batch, its padding). :class:`Int8Linear` scales every token's
activations by their own maximum instead: each token is computed alone, so a text gets the
same vector however it is batched, and the rounding error is half of the per-pass one. Weights
are quantised per output channel, once, when the layer is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

INT8_MAX = 127.0
_TINY = 1e-12  # keeps an all-zero row or channel from dividing by zero


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and int8 activations (per token)."""

    weight_t: torch.Tensor  # int8, (in_features, out_features)
    weight_scale: torch.Tensor  # float32, (1, out_features)
    bias: torch.Tensor | None

    def __init__(
        self, weight_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.out_features = weight_t.shape[1]
        self.register_buffer("weight_t", weight_t)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """``linear``'s weights quantised per output channel."""
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(_TINY) / INT8_MAX
        quantised = torch.round(weight / scale).to(torch.int8)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(quantised.t().contiguous(), scale.t().contiguous(), bias)

    @classmethod
    def side_by_side(cls, layers: Sequence[Int8Linear]) -> Int8Linear:
        """One layer whose outputs are those of ``layers`` (same inputs) concatenated: the
        input is quantised once, and each output is exactly what its own layer computes."""
        biases = [
            layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            for layer in layers
        ]
        return cls(
            torch.cat([layer.weight_t for layer in layers], dim=1).contiguous(),
            torch.cat([layer.weight_scale for layer in layers], dim=1).contiguous(),
            torch.cat(biases),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.reshape(-1, inputs.shape[-1])
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(_TINY) / INT8_MAX
        quantised = torch.round(rows / scale).to(torch.int8)
        out = torch._int_mm(quantised, self.weight_t).float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*inputs.shape[:-1], self.out_features)


def quantise_linears(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside ``module`` by an :class:`Int8Linear`, in place.
    Returns how many were replaced."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear.from_linear(child))
            replaced += 1
        else:
            replaced += quantise_linears(child)
    return replaced
