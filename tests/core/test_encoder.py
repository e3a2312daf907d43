"""MicroBatchEncoder with the real MiniLM model: concurrent requests share forward passes and
get exactly what ``encode_texts`` gives; failures reach the right callers; cancellation and
``close()`` leave nothing hanging. Only the failure test uses a fake encode function."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from journeygate.encoder import (
    EMBEDDING_DIM,
    PACKED_TOKENS,
    EncoderClosedError,
    MicroBatchEncoder,
    encode_packed,
    encode_texts,
    load_sentence_model,
    set_torch_threads,
)

QUERIES = [
    "red retrospot lunch bag",
    "lunch bag black skull",
    "regency cakestand 3 tier",
    "white hanging heart t-light holder",
    "jumbo bag pink polkadot",
    "set of 3 cake tins pantry design",
    "party bunting",
    "assorted colour bird ornament",
    "paper chain kit 50's christmas",
    "natural slate heart chalkboard",
    "hand warmer union jack",
    "alarm clock bakelike red",
    "pack of 72 retrospot cake cases",
    "spotty bunting",
    "heart of wicker small",
    "vintage snap cards",
    "wooden frame antique white",
    "glass star frosted t-light holder",
    "roses regency teacup and saucer",
    "lunch bag suki design",
    "charlotte bag pink polkadot",
    "doormat new england",
    "small popcorn holder",
    "victorian glass hanging t-light",
    "jam making set with jars",
    "home building block word",
    "chocolate hot water bottle",
    "baking set 9 piece retrospot",
    "recipe box pantry yellow design",
    "gin and tonic diet metal sign",
    "red toadstool led night light",
    "postage",
]


@pytest.fixture(scope="session")
def sentence_model() -> object:
    """Load MiniLM once per session (a few seconds); ``encode_texts`` reuses it."""
    return load_sentence_model()


@pytest.fixture
async def encoder(sentence_model: object) -> AsyncIterator[MicroBatchEncoder]:
    """A real-model encoder without the cache, so every text reaches the model."""
    enc = MicroBatchEncoder(cache_size=0)
    yield enc
    await enc.close()


class GatedEncode:
    """The real ``encode_texts``, held back until ``release()``, recording each batch: lets a
    test know which callers are waiting while a forward pass runs."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.started.set()
        if not self.gate.wait(timeout=10):
            raise TimeoutError("the test never released the gate")
        return encode_texts(texts)

    def release(self) -> None:
        self.gate.set()


async def wait_for_batch(gated: GatedEncode) -> None:
    assert await asyncio.to_thread(gated.started.wait, 10), "no batch started"


async def test_concurrent_calls_match_encode_texts_and_share_passes(
    encoder: MicroBatchEncoder,
) -> None:
    vectors = await asyncio.gather(*(encoder.encode(text) for text in QUERIES))

    expected = encode_texts(QUERIES)
    assert np.stack(vectors).shape == (32, EMBEDDING_DIM)
    assert np.allclose(np.stack(vectors), expected, atol=1e-5)
    # the same vector as encoding each text on its own (padding in a batch changes nothing)
    for index in (0, 7, 31):
        assert np.allclose(vectors[index], encode_texts([QUERIES[index]])[0], atol=1e-5)
    assert all(np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5) for vector in vectors)
    assert encoder.stats.requests == 32
    assert encoder.stats.texts == 32
    assert encoder.stats.batches <= 4  # all 32 queued in one loop tick: normally one pass
    assert encoder.stats.mean_batch_size >= 8


def test_packed_encoding_gives_the_vectors_of_encode_texts(sentence_model) -> None:
    """Texts of unequal length, more tokens than one pack holds, one text longer than a pack
    (truncated like encode_texts truncates it) and an empty one."""
    long_text = " ".join(QUERIES * 12)
    texts = [*QUERIES, long_text, "", *QUERIES[::-1]]
    tokens = sentence_model.preprocess(texts)["attention_mask"].sum()
    assert tokens > 2 * PACKED_TOKENS  # three packs at least
    packed = encode_packed(texts)
    assert packed.shape == (len(texts), EMBEDDING_DIM) and packed.dtype == np.float32
    np.testing.assert_allclose(packed, encode_texts(texts), atol=1e-5)
    assert encode_packed([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(ValueError, match="at least 1"):
        set_torch_threads(0)


async def test_close_product_texts_are_closer_than_unrelated(encoder: MicroBatchEncoder) -> None:
    red_bag, skull_bag, cakestand = await asyncio.gather(
        encoder.encode("red retrospot lunch bag"),
        encoder.encode("lunch bag black skull"),
        encoder.encode("regency cakestand 3 tier"),
    )
    bags = float(red_bag @ skull_bag)
    assert bags > float(red_bag @ cakestand) + 0.1
    assert bags > float(skull_bag @ cakestand) + 0.1


async def test_encode_many_matches_and_joins_the_queue(encoder: MicroBatchEncoder) -> None:
    many, single = await asyncio.gather(
        encoder.encode_many(QUERIES[:10]), encoder.encode(QUERIES[20])
    )
    assert many.shape == (10, EMBEDDING_DIM)
    assert np.allclose(many, encode_texts(QUERIES[:10]), atol=1e-5)
    assert np.allclose(single, encode_texts([QUERIES[20]])[0], atol=1e-5)
    assert encoder.stats.batches == 1
    empty = await encoder.encode_many([])
    assert empty.shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        await encoder.encode_many("one string is not a list of texts")


async def test_identical_texts_in_a_batch_are_encoded_once(encoder: MicroBatchEncoder) -> None:
    texts = ["party bunting"] * 5 + ["spotty bunting"] * 3
    vectors = await asyncio.gather(*(encoder.encode(text) for text in texts))
    assert encoder.stats.requests == 8
    assert encoder.stats.texts == 2
    assert encoder.stats.batches == 1
    assert all(np.array_equal(vectors[0], vector) for vector in vectors[:5])
    # every caller owns its array: changing one does not change another
    vectors[0][:] = 0.0
    assert np.allclose(vectors[1], encode_texts(["party bunting"])[0], atol=1e-5)


async def test_lru_cache_answers_repeats_and_stays_bounded(sentence_model: object) -> None:
    enc = MicroBatchEncoder(cache_size=2)
    try:
        first = await enc.encode("party bunting")
        again = await enc.encode("party bunting")
        assert np.array_equal(first, again)
        assert enc.stats.cache_hits == 1
        assert enc.stats.batches == 1
        again[:] = 0.0  # a caller's copy; the cached vector is untouched
        assert np.array_equal(await enc.encode("party bunting"), first)
        assert enc.stats.cache_hits == 2
        await enc.encode("spotty bunting")
        await enc.encode("postage")  # evicts "party bunting", the least recently used
        await enc.encode("party bunting")
        assert enc.stats.cache_hits == 2
        assert enc.stats.batches == 4
    finally:
        await enc.close()


async def test_an_encode_error_reaches_exactly_the_callers_of_that_batch() -> None:
    """Fake encode function: fails any batch containing "boom"."""

    def flaky(texts: Sequence[str]) -> np.ndarray:
        if "boom" in texts:
            raise ValueError("model exploded")
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    enc = MicroBatchEncoder(encode=flaky, max_batch=2, cache_size=0)
    try:
        # FIFO, two distinct texts per batch: [ok1, ok2] succeeds, [boom, ok3] fails
        results = await asyncio.wait_for(
            asyncio.gather(
                enc.encode("ok1"),
                enc.encode("ok2"),
                enc.encode("boom"),
                enc.encode("ok3"),
                return_exceptions=True,
            ),
            timeout=5,
        )
        assert isinstance(results[0], np.ndarray)
        assert isinstance(results[1], np.ndarray)
        assert isinstance(results[2], ValueError)
        assert isinstance(results[3], ValueError)
        assert enc.stats.batches == 2
        assert enc.stats.failed_batches == 1
        # the batcher survived: the next call works
        assert np.allclose(await asyncio.wait_for(enc.encode("ok4"), timeout=5), 0.5)
        with pytest.raises(ValueError, match="model exploded"):
            await asyncio.wait_for(enc.encode_many(["boom", "fine"]), timeout=5)
        # a malformed result is an error for its callers too, not a hang
        enc._encode = lambda texts: np.ones((len(texts) + 1, 4), dtype=np.float32)
        with pytest.raises(ValueError, match="shape"):
            await asyncio.wait_for(enc.encode("ok5"), timeout=5)
    finally:
        await enc.close()


async def test_cancelled_callers_do_not_break_others(sentence_model: object) -> None:
    gated = GatedEncode()
    enc = MicroBatchEncoder(encode=gated, cache_size=0)
    try:
        running = asyncio.create_task(enc.encode("party bunting"))
        running_cancelled = asyncio.create_task(enc.encode("postage"))
        await wait_for_batch(gated)  # first pass is in the executor, held at the gate
        waiting = [asyncio.create_task(enc.encode(text)) for text in QUERIES[:3]]
        abandoned = asyncio.create_task(enc.encode("spotty bunting"))
        await asyncio.sleep(0.01)
        assert enc.queue_depth == 4
        running_cancelled.cancel()
        abandoned.cancel()
        await asyncio.sleep(0)
        gated.release()

        vector = await asyncio.wait_for(running, timeout=10)
        assert np.allclose(vector, encode_texts(["party bunting"])[0], atol=1e-5)
        results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
        assert np.allclose(np.stack(results), encode_texts(QUERIES[:3]), atol=1e-5)
        for task in (running_cancelled, abandoned):
            with pytest.raises(asyncio.CancelledError):
                await task
        # the abandoned text never reached the model
        assert gated.batches == [["party bunting", "postage"], QUERIES[:3]]
        assert enc.is_running
        assert await asyncio.wait_for(enc.encode("doormat new england"), timeout=10) is not None
    finally:
        gated.release()
        await enc.close()


async def test_close_ends_the_task_and_fails_waiting_callers(sentence_model: object) -> None:
    gated = GatedEncode()
    enc = MicroBatchEncoder(encode=gated)
    in_flight = asyncio.create_task(enc.encode("party bunting"))
    await wait_for_batch(gated)
    queued = asyncio.create_task(enc.encode("postage"))
    await asyncio.sleep(0.01)
    assert enc.is_running

    await enc.close()
    gated.release()

    assert not enc.is_running
    for task in (in_flight, queued):
        with pytest.raises(EncoderClosedError):
            await asyncio.wait_for(task, timeout=5)
    with pytest.raises(EncoderClosedError):
        await enc.encode("spotty bunting")
    await enc.close()  # idempotent


async def test_event_loop_keeps_running_during_a_forward_pass(encoder: MicroBatchEncoder) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    ticking = asyncio.create_task(ticker())
    texts = [f"{query} gift set {n}" for n, query in enumerate(QUERIES * 2)]
    await encoder.encode_many(texts)
    done.set()
    await ticking
    assert ticks >= 3


async def test_lives_in_an_aiohttp_cleanup_ctx(
    sentence_model: object,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    key = web.AppKey("encoder", MicroBatchEncoder)
    created: list[MicroBatchEncoder] = []

    async def encoder_ctx(app: web.Application) -> AsyncIterator[None]:
        app[key] = MicroBatchEncoder()
        created.append(app[key])
        yield
        await app[key].close()

    async def handler(request: web.Request) -> web.Response:
        vector = await request.app[key].encode(request.query["q"])
        return web.json_response({"dim": len(vector), "norm": float(np.linalg.norm(vector))})

    app = web.Application()
    app.cleanup_ctx.append(encoder_ctx)
    app.router.add_get("/encode", handler)
    client = await aiohttp_client(app)
    responses = await asyncio.gather(
        *(client.get("/encode", params={"q": query}) for query in QUERIES[:8])
    )
    for response in responses:
        assert response.status == 200
        body = await response.json()
        assert body["dim"] == EMBEDDING_DIM
        assert abs(body["norm"] - 1.0) < 1e-5
    assert created[0].is_running
    await client.close()
    assert not created[0].is_running


def test_the_fast_precision_is_measured_once_or_set_by_the_environment(monkeypatch):
    from journeygate import encoder

    measured = encoder.fast_precision()
    assert measured in ("float32", "int8")
    assert encoder.fast_precision() is measured  # once per process
    encoder.fast_precision.cache_clear()
    try:
        for chosen in ("int8", "float32"):
            monkeypatch.setenv(encoder.PRECISION_ENV, chosen)
            encoder.fast_precision.cache_clear()
            assert encoder.fast_precision() == chosen
    finally:
        monkeypatch.delenv(encoder.PRECISION_ENV)
        encoder.fast_precision.cache_clear()
    assert encoder.fast_precision() == measured
