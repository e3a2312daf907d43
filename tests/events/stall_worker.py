"""A real worker process whose event observer hangs once it has seen some events: it has
applied a batch and will never acknowledge it, the state a worker killed mid-batch leaves.

Usage: python stall_worker.py MARKER_FILE CONSUMER (config from the environment)."""

import asyncio
import sys
import time
from pathlib import Path

from journeygate import hookimpl
from journeygate.config import load_config
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager


class Stall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    @hookimpl
    def journeygate_observe_event(self, event):
        self.marker.write_text(event.message_id)
        time.sleep(3600)  # blocks the whole worker, before it acknowledges the batch


if __name__ == "__main__":
    config = load_config()
    pm = build_plugin_manager(config, extra_plugins=(("stall", Stall(Path(sys.argv[1]))),))
    asyncio.run(serve(config, pm, consumer=sys.argv[2]))
