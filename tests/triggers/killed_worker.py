"""A real ``journeygate worker`` process with the triggers plugin, whose first batch stalls
after it was applied: a batch observer called before or after the triggers plugin's writes a
marker and blocks the whole process, so the batch is never acknowledged and the test can
SIGKILL the worker at that point.

Usage: python killed_worker.py MARKER_FILE CONSUMER before|after (config from the
environment)."""

import asyncio
import sys
import time
from pathlib import Path

from jg_triggers.plugin import TriggersPlugin
from journeygate import hookimpl
from journeygate.config import load_config
from journeygate.events.worker import serve
from journeygate.registry import build_plugin_manager


class Stall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    @hookimpl
    def journeygate_observe_events(self, events):
        self.marker.write_text(",".join(event.message_id for event in events))
        time.sleep(3600)  # blocks the whole worker, before it acknowledges the batch


if __name__ == "__main__":
    marker, consumer, position = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    stall, triggers = ("stall", Stall(marker)), ("triggers", TriggersPlugin())
    order = (stall, triggers) if position == "before" else (triggers, stall)
    config = load_config()
    pm = build_plugin_manager(config, load_entrypoints=False, extra_plugins=order)
    asyncio.run(serve(config, pm, consumer=consumer))
