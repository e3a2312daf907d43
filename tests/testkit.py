"""Helpers shared by test modules in several folders. Import them from here, never from
``conftest``: with several ``conftest.py`` files, ``import conftest`` finds whichever was
loaded first."""

from __future__ import annotations

import socket

from journeygate.config import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
