"""journeygate: a plugin-based personalization gateway for online stores and CMS sites.

Plugin authors need one import: ``from journeygate import hookimpl`` (and ``offload`` for
synchronous implementations that do heavy CPU work, ``RetryBatch`` for a batch observer that
needs its batch again).
"""

from collections.abc import Callable
from typing import TypeVar

import pluggy

from journeygate.hookspecs import PROJECT_NAME, RetryBatch

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

OFFLOAD_ATTRIBUTE = "journeygate_offload"

F = TypeVar("F", bound=Callable[..., object])


def offload(function: F) -> F:
    """Mark a synchronous hook implementation to run in the executor, off the event loop."""
    setattr(function, OFFLOAD_ATTRIBUTE, True)
    return function


__all__ = ["RetryBatch", "__version__", "hookimpl", "offload"]
