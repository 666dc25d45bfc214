"""Progress reports: the one callback type, `progress(done, total)`, and the tqdm bar shown for it on a terminal.

An operation of several stages (files loaded and indexed, then chunks embedded) reports one count to a callback:
each stage's counts come after those of the stages before it, so `done` only grows and the total grows when a stage
begins. qa's own bar shows each stage on the same line under its own name ("loading" files, then "embedding" chunks).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Bar", "Progress", "Stages", "reporting"]

Progress = Callable[[int, int], None]
"""Told `(done, total)`: first `(0, total)`, then after each step; `done` reaches `total` at the end."""


class Bar:
    """One tqdm bar on stderr, made on the first report; a new stage (`stage`) restarts the same bar under its name."""

    def __init__(self, desc: str = "loading", unit: str = "file") -> None:
        self._desc, self._unit = desc, unit
        self._tqdm: Any = None
        self._restart = False

    def stage(self, desc: str, unit: str) -> None:
        """The counts that follow are of a new stage: `desc` in `unit`s, from 0."""
        if (desc, unit) != (self._desc, self._unit):
            self._desc, self._unit = desc, unit
            self._restart = self._tqdm is not None

    def __call__(self, done: int, total: int) -> None:
        if self._tqdm is None:
            tqdm = importlib.import_module("tqdm").tqdm  # tqdm ships no type information
            self._tqdm = tqdm(total=total, desc=self._desc, unit=self._unit, file=sys.stderr, leave=False)
        elif self._restart:
            self._restart = False
            self._tqdm.unit = self._unit
            self._tqdm.set_description_str(self._desc, refresh=False)
            self._tqdm.reset(total=total)
        elif total != self._tqdm.total:
            self._tqdm.total = total
        self._tqdm.update(done - self._tqdm.n)
        if done >= total:
            self._tqdm.refresh()  # a stage's end is shown, however soon after the last update it comes

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


class Stages:
    """The stages of one operation reported to one Progress as a single count: each stage's counts are shifted by
    the totals of the stages before it (qa's own Bar is told the stage's name instead)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self._total = 0  # of every stage reported so far

    def stage(self, desc: str, unit: str) -> Progress | None:
        """The Progress for a stage: its counts follow those of the stages reported before its first report (a
        stage never reported adds nothing)."""
        progress = self.progress
        if progress is None:
            return None
        base: int | None = None

        def report(done: int, total: int) -> None:
            nonlocal base
            if base is None:
                base = self._total
                if isinstance(progress, Bar):
                    progress.stage(desc, unit)
            self._total = base + total
            if isinstance(progress, Bar):
                progress(done, total)
            else:
                progress(base + done, base + total)

        return report


@contextmanager
def reporting(progress: Progress | bool | None, *, default: bool) -> Iterator[Progress | None]:
    """What to report to: `progress` itself when it is a callback; a Bar on stderr for True (and for None when
    `default` and stderr is a terminal), closed at the end; else None."""
    if callable(progress):
        yield progress
        return
    show = progress if progress is not None else default and sys.stderr.isatty()
    if not show:
        yield None
        return
    bar = Bar()
    try:
        yield bar
    finally:
        bar.close()
