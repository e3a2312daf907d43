"""What the subcommand modules share: the one-line error exit and argparse types."""

from __future__ import annotations

import argparse
import sys


def fail(message: str) -> int:
    """Print ``journeygate: message`` on stderr; the exit status of a usage or input error."""
    print(f"journeygate: {message}", file=sys.stderr)
    return 2


def positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number
