"""MiniLM's forward pass over several short texts packed into one sequence, without padding.

A padded batch computes every text at the length of the longest: for the few sentences of one
feedback, a third of the work was padding. Here the texts' tokens are concatenated, positions
restart at each text and attention is masked block-diagonally, so every text attends only to
itself and gets the vector a pass of its own would give it.

The pass is written out over the model's weights instead of calling the Hugging Face module:
for the few dozen tokens of one feedback, that module's per-call bookkeeping (mask
preparation, attention dispatch, a dozen submodule calls per layer) was a sixth of the time,
and written out the query, key and value projections run as one product (with int8 layers,
one quantisation of their shared input). Same arithmetic: :func:`encode_packed
<journeygate.encoder.encode_packed>` is tested against sentence-transformers' own
``encode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from journeygate.int8 import Int8Linear


def _side_by_side(layers: Sequence[nn.Module]) -> nn.Module:
    """One linear layer computing the outputs of ``layers`` (same input), concatenated."""
    if all(isinstance(layer, Int8Linear) for layer in layers):
        return Int8Linear.side_by_side([layer for layer in layers if isinstance(layer, Int8Linear)])
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    if len(linears) != len(layers):
        raise TypeError("expected nn.Linear or Int8Linear layers of one kind")
    fused = nn.Linear(linears[0].in_features, sum(layer.out_features for layer in linears))
    with torch.no_grad():
        fused.weight.copy_(torch.cat([layer.weight for layer in linears]))
        fused.bias.copy_(torch.cat([layer.bias for layer in linears]))
    return fused


class _Layer:
    """One BERT encoder layer: self-attention, then the feed-forward block, each followed by
    a residual connection and LayerNorm (post-norm, as BERT)."""

    def __init__(self, layer: Any, heads: int, eps: float) -> None:
        attention = layer.attention
        self.heads = heads
        self.eps = eps
        self.qkv = _side_by_side([attention.self.query, attention.self.key, attention.self.value])
        self.attention_out = attention.output.dense
        self.attention_norm = attention.output.LayerNorm
        self.intermediate = layer.intermediate.dense
        self.output = layer.output.dense
        self.output_norm = layer.output.LayerNorm

    def __call__(self, hidden: torch.Tensor, same_text: torch.Tensor) -> torch.Tensor:
        tokens, width = hidden.shape
        query, key, value = self.qkv(hidden).view(tokens, 3, self.heads, -1).permute(1, 2, 0, 3)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=same_text)
        attended = attended.transpose(0, 1).reshape(tokens, width)
        norm = self.attention_norm
        hidden = F.layer_norm(
            self.attention_out(attended) + hidden, (width,), norm.weight, norm.bias, self.eps
        )
        norm = self.output_norm
        expanded = F.gelu(self.intermediate(hidden))
        return F.layer_norm(
            self.output(expanded) + hidden, (width,), norm.weight, norm.bias, self.eps
        )


class PackedEncoder:
    """Mean-pooled, L2-normalised vectors of packed texts, from a Hugging Face ``BertModel``
    (whose weights it shares; built once per model)."""

    def __init__(self, bert: Any) -> None:
        config = bert.config
        embeddings = bert.embeddings
        self.eps = float(config.layer_norm_eps)
        self.words = embeddings.word_embeddings.weight
        self.positions = embeddings.position_embeddings.weight
        self.token_type = embeddings.token_type_embeddings.weight[0]  # every token: segment 0
        self.embedding_norm = embeddings.LayerNorm
        self.layers = [
            _Layer(layer, config.num_attention_heads, self.eps) for layer in bert.encoder.layer
        ]

    def __call__(self, rows: Sequence[torch.Tensor], lengths: Sequence[int]) -> torch.Tensor:
        """One pass over ``rows`` (token ids of each text, unpadded): a row per text."""
        ids = torch.cat(list(rows))
        owner = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(list(lengths)))
        positions = torch.cat([torch.arange(length) for length in lengths])
        same_text = owner[:, None] == owner[None, :]
        with torch.inference_mode():
            hidden = self.words[ids] + self.positions[positions] + self.token_type
            norm = self.embedding_norm
            hidden = F.layer_norm(hidden, (hidden.shape[1],), norm.weight, norm.bias, self.eps)
            for layer in self.layers:
                hidden = layer(hidden, same_text)
            # mean pooling and L2 normalisation, as the model's Pooling and Normalize modules
            sums = torch.zeros(len(rows), hidden.shape[1]).index_add_(0, owner, hidden)
            counts = torch.tensor(list(lengths), dtype=hidden.dtype)[:, None]
            return F.normalize(sums / counts, dim=1)
