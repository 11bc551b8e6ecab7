"""How far a long scan has got: told to a bar on a terminal (the CLI) or to the log (workers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: A scan calls it after each page: the stage it is in (``ledger``, ``listing voodoosms``),
#: how many it has done there, and of how many (None: not known, e.g. a provider's list).
Progress = Callable[[str, int, int | None], None]


def silent(what: str, done: int, total: int | None) -> None:
    """No one is watching."""


class LogEvery:
    """Progress as log lines: at the first page of each stage, then every `pages` pages
    (at 2,000 numbers a page and the default 50, every 100,000 numbers), so that a scan
    of ten million numbers in a worker says where it is a hundred times, not five
    thousand."""

    def __init__(self, log: Any, event: str, pages: int = 50, **fields: Any) -> None:
        self.log, self.event, self.pages, self.fields = log, event, pages, fields
        self._calls: dict[str, int] = {}

    def __call__(self, what: str, done: int, total: int | None) -> None:
        calls = self._calls.get(what, 0)
        self._calls[what] = calls + 1
        if calls % self.pages:
            return
        percent = None if not total else min(100, round(100 * done / total))
        self.log.info(self.event, stage=what, done=done, total=total, percent=percent,
                      **self.fields)  # fmt: skip
