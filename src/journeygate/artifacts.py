"""Versioned model artifacts: a directory per version, and ``CURRENT`` naming the one to serve.

Artifacts live in ``<root>/<YYYYmmddTHHMMSS>-<hash>/`` (UTC time, first 8 hex digits of the
SHA-256 of the artifact's files). ``<root>/CURRENT`` holds the name of the artifact to serve.
It is replaced atomically (temporary file + ``os.replace``) only once the directory is
complete, so a gateway polling it never sees a half-written model. Every model a plugin
trains (recommender, personas, sentiment) is published this way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

CURRENT = "CURRENT"


def latest_artifact(root: Path) -> Path | None:
    """The artifact directory ``CURRENT`` names, or None when there is none (yet)."""
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = root / name
    return path if name and path.is_dir() else None


def _digest(directory: Path) -> str:
    """First 8 hex digits of the SHA-256 of the artifact's files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:8]


def publish_artifact(root: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a new artifact directory, name it by time and content, and point
    ``CURRENT`` at it. An identical artifact written within the same second is reused."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex}"
    try:
        staging.mkdir()
        write(staging)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{_digest(staging)}"
        final = root / name
        if not final.exists():
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    pointer = root / f".{CURRENT}-{uuid.uuid4().hex}"
    pointer.write_text(name + "\n", encoding="utf-8")
    os.replace(pointer, root / CURRENT)
    return final
