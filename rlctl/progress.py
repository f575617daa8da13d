"""One progress bar for every long run: drawn on stderr when it is a terminal, silent otherwise.

    with progress_bar("evaluating", total=12) as bar:
        for item in items:
            work(item)
            bar.advance()            # or bar.update(completed=..., description=...)
            bar.log("done with x")   # a plain line on the console (above the bar on a terminal)

Libraries report progress through plain callbacks; only the command layer calls this.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class NullBar:
    """The bar when stderr is not a terminal: draws nothing; :meth:`log` prints a plain line."""

    def __init__(self, console: Any = None) -> None:
        self.console = console

    def advance(self, amount: float = 1.0) -> None:
        pass

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        pass

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, markup=False, highlight=False)
        else:
            log.info("%s", message)

    def follow_clock(self, start: float, span: float) -> None:
        """Move from ``start`` towards ``start + span`` with wall-clock seconds (a run of known length)."""

    def stop_clock(self) -> None:
        pass


class Bar(NullBar):
    """A Rich progress bar's one task."""

    def __init__(self, progress: Any, task: Any) -> None:
        super().__init__(progress.console)
        self._progress = progress
        self._task = task
        self._clock: tuple[threading.Thread, threading.Event] | None = None

    def advance(self, amount: float = 1.0) -> None:
        self._progress.advance(self._task, amount)

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        self._progress.update(self._task, completed=completed, total=total, description=description)

    def follow_clock(self, start: float, span: float) -> None:
        self.stop_clock()
        self.update(completed=start)
        stop = threading.Event()
        t0 = time.monotonic()

        def tick() -> None:
            while not stop.wait(0.5):
                self.update(completed=start + min(span, time.monotonic() - t0))

        thread = threading.Thread(target=tick, name="rlctl-progress-clock", daemon=True)
        thread.start()
        self._clock = (thread, stop)

    def stop_clock(self) -> None:
        if self._clock is not None:
            thread, stop = self._clock
            stop.set()
            thread.join()
            self._clock = None


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None = None, *, console: Any = None, transient: bool = True
) -> Iterator[NullBar]:
    """A progress bar on ``console`` (default: stderr) when it is a terminal, else a :class:`NullBar`.

    ``total=None`` draws a pulsing bar (the amount of work is unknown).
    """
    from rich.console import Console

    con = console if console is not None else Console(stderr=True)
    if not con.is_terminal:
        yield NullBar(con)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    else:
        columns += [TimeElapsedColumn()]
    with Progress(*columns, console=con, transient=transient) as progress:
        bar = Bar(progress, progress.add_task(description, total=total))
        try:
            yield bar
        finally:
            bar.stop_clock()
