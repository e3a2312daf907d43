"""Versioned model artifacts, shared by every plugin that trains a model (recommender,
sentiment): published atomically, served through a ``CURRENT`` pointer.

Artifacts live in ``<out>/<YYYYmmddTHHMMSS>-<hash>/`` (UTC time, first 8 hex digits of the
SHA-256 of the files the model wrote). ``<out>/CURRENT`` holds the name of the artifact to
serve. It is replaced atomically (temporary file + ``os.replace``) only once the directory is
complete, so a gateway polling it never sees a half-written model.
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


def latest_artifact(out_root: Path) -> Path | None:
    """The artifact directory ``CURRENT`` names, or None when there is none (yet)."""
    try:
        name = (out_root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = out_root / name
    return path if name and path.is_dir() else None


def _digest(directory: Path) -> str:
    """First 8 hex digits of the SHA-256 of the artifact's files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:8]


def publish(save: Callable[[Path], None], out_root: Path) -> Path:
    """Let ``save`` write a model into a fresh directory, make that a new artifact and point
    ``CURRENT`` at it. An identical artifact written within the same second is reused."""
    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".staging-{uuid.uuid4().hex}"
    try:
        staging.mkdir()
        save(staging)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{_digest(staging)}"
        final = out_root / name
        if not final.exists():
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    pointer = out_root / f".{CURRENT}-{uuid.uuid4().hex}"
    pointer.write_text(name + "\n", encoding="utf-8")
    os.replace(pointer, out_root / CURRENT)
    return final
