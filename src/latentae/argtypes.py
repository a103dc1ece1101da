"""argparse types that parse and range-check one number: a bad value is a one-line usage
error before any work starts. The CLI's shared flags (``cli/args.py``) and the studies'
own parsers (``studies/common.py``, which may not import the CLI) both take them here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["at_least", "checked_number", "non_negative_float", "non_negative_int", "positive_float",
           "positive_int"]


def checked_number(text: str, kind: type, ok: Callable[[Any], bool], what: str) -> Any:
    """``kind(text)`` if ``ok`` of it, else an ``ArgumentTypeError`` saying ``what`` was
    expected."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return checked_number(text, int, lambda v: v >= 1, "a positive integer (>= 1)")


def non_negative_int(text: str) -> int:
    return checked_number(text, int, lambda v: v >= 0, "a non-negative integer (>= 0)")


def positive_float(text: str) -> float:
    return checked_number(text, float, lambda v: v > 0, "a positive number (> 0)")


def non_negative_float(text: str) -> float:
    return checked_number(text, float, lambda v: v >= 0, "a non-negative number (>= 0)")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``."""
    return lambda text: checked_number(text, int, lambda v: v >= low, f"an integer >= {low}")

