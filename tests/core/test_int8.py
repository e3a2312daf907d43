"""Int8 linear layers: every token computed alone, close to float32, and a MiniLM in int8 whose
vector for a text does not depend on what shares its forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from journeygate.encoder import (
    EMBEDDING_DIM,
    encode_cached,
    encode_packed,
    encode_texts,
    load_sentence_model,
)
from journeygate.int8 import Int8Linear, quantise_linears

FEEDBACK = [
    "love the colour, but it fell apart in a week",
    "Great phone.",
    "The service was slow and the food was cold, never again!!",
    "ok",
    "I would buy this kettle again, it boils quickly and looks lovely on the counter.",
]


def test_each_token_is_computed_alone_and_close_to_float32() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    int8 = Int8Linear.from_linear(linear)
    inputs = torch.randn(3, 7, 384)
    inputs[1] *= 40.0  # a loud sequence beside quiet ones: a per-pass scale would crush these
    with torch.inference_mode():
        together = int8(inputs)
        alone = torch.stack(
            [int8(inputs[i : i + 1, j : j + 1])[0, 0] for i in range(3) for j in range(7)]
        ).reshape(3, 7, 1536)
        exact = linear(inputs)
    assert torch.equal(together, alone)
    for i in range(3):  # within 2% of each sequence's own output range
        error = (together[i] - exact[i]).abs().max()
        assert error < 0.02 * exact[i].abs().max(), i


def test_quantise_linears_replaces_every_linear_layer() -> None:
    block = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(16, 4))
    )
    assert quantise_linears(block) == 2
    assert [type(m).__name__ for m in block.modules() if "Linear" in type(m).__name__] == [
        "Int8Linear",
        "Int8Linear",
    ]
    assert block(torch.randn(2, 8)).shape == (2, 4)


def test_int8_minilm_is_close_to_float32_and_its_own_copy() -> None:
    float32, int8 = encode_texts(FEEDBACK), encode_texts(FEEDBACK, precision="int8")
    assert int8.shape == (len(FEEDBACK), EMBEDDING_DIM)
    cosines = (float32 * int8).sum(axis=1)
    assert cosines.min() > 0.98, cosines
    assert not np.allclose(float32, int8, atol=1e-4)  # really another model...
    assert load_sentence_model("int8") is not load_sentence_model()  # ...beside the float32 one
    with pytest.raises(ValueError, match="float32 or int8"):
        load_sentence_model("int4")  # type: ignore[arg-type]


def test_an_int8_vector_does_not_depend_on_what_shares_its_pass(tmp_path) -> None:
    """Alone, packed with other feedback, padded in a batch, or cached on disk: the same vector
    up to rounding flips of a few activations (cosine above 0.99; with PyTorch's per-pass
    quantisation the same sentence alone and packed was at 0.965)."""
    alone = np.stack([encode_packed([text], "int8")[0] for text in FEEDBACK])
    arrangements = {
        "packed": encode_packed(FEEDBACK, "int8"),
        "packed, reversed": encode_packed(FEEDBACK[::-1], "int8")[::-1],
        "padded": encode_texts(FEEDBACK, precision="int8"),
        "cached": encode_cached(FEEDBACK, tmp_path, "int8"),
    }
    for name, vectors in arrangements.items():
        cosines = (alone * vectors).sum(axis=1)
        assert cosines.min() > 0.99, (name, cosines)
    assert [path.name.endswith("-int8.npy") for path in tmp_path.iterdir()] == [True]
    np.testing.assert_allclose(encode_cached(FEEDBACK, tmp_path), encode_texts(FEEDBACK))
