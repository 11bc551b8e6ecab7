"""Iterables taken a batch at a time, so that a process holds one batch of a stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter): itertools.batched of Python 3.12,
    for 3.11."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
