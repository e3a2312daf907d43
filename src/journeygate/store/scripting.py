"""Pipelined round trips that call Lua scripts by EVALSHA, for the Redis stores of the
experiments, the webhooks and the triggers: the scripts are loaded once, and again when
Redis lost them (a restart, ``SCRIPT FLUSH``), and every failure is a ``StoreUnavailable``."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from journeygate.store.base import StoreUnavailable


@functools.cache
def script_sha(script: str) -> str:
    """The SHA1 Redis names ``script`` by (``EVALSHA``), computed here: no round trip to
    learn it, and nothing to load until Redis answers that it does not have the script."""
    return hashlib.sha1(script.encode()).hexdigest()


def redis_unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")


class ScriptedPipelines:
    """Runs pipelines whose commands may call ``scripts`` through :meth:`sha`."""

    def __init__(
        self,
        client: Any,
        scripts: Sequence[str],
        timeout_s: float,
        error: Callable[[BaseException], StoreUnavailable] = redis_unavailable,
    ) -> None:
        self.client = client
        self.scripts = tuple(scripts)
        self.timeout_s = timeout_s
        self.error = error
        self._loaded = False

    def sha(self, script: str) -> str:
        """The script's SHA1, for ``pipe.evalsha`` inside a ``build`` function."""
        return script_sha(script)

    async def guard(self, awaitable: Awaitable[Any]) -> Any:
        """Await one Redis call under the timeout; its failure is a ``StoreUnavailable``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise self.error(exc) from exc

    async def run(self, build: Callable[[Any], None], scripted: bool = True) -> list[Any]:
        """One round trip: the commands ``build`` adds to a pipeline, in order. When Redis
        lost the scripts, none of the pipeline's script calls ran: the scripts are loaded and
        the pipeline runs again (its other commands must be safe to repeat). A command Redis
        refused raises ``self.error`` of it; ``scripted=False`` skips loading the scripts."""
        for attempt in range(2):
            if scripted and (attempt or not self._loaded):
                pipe = self.client.pipeline(transaction=False)
                for script in self.scripts:
                    pipe.script_load(script)
                await self.guard(pipe.execute())
                self._loaded = True
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            results: list[Any] = await self.guard(pipe.execute(raise_on_error=False))
            if any(isinstance(result, NoScriptError) for result in results):
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise self.error(result)
            return results
        raise StoreUnavailable("redis: the scripts could not be loaded")  # pragma: no cover
