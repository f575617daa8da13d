"""``--json PATH`` on every command: a file, or ``-`` for stdout with nothing else on it.

:class:`JsonOut` is the one way a command writes its JSON document::

    with JsonOut(json_out) as out:   # json_out: Path | None; Path("-") means stdout
        report = work()               # tables, progress, logs, child processes: stderr
        out.write(report)             # a file now, or stdout once the block ends

While the destination is stdout, the block runs with file descriptor 1 pointed at stderr and
``sys.stdout`` replaced by ``sys.stderr``: whatever prints to stdout meanwhile (a Rich table, a
library's ``print``, Ray's worker log lines, redis-server or gosvc started as children) lands on
stderr, and the document is the only thing stdout receives. It is written when the block ends
without an error; on an error stdout stays empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from rlctl.report import write_atomic

#: The ``--json`` value that means stdout.
STDOUT = "-"

#: Default of ``--json`` on commands whose JSON is their output.
STDOUT_PATH = Path(STDOUT)

#: Help text fragment for every ``--json`` option.
JSON_HELP = "('-': stdout, and nothing else goes to stdout)"


def is_stdout(path: str | Path | None) -> bool:
    """True when a ``--json`` value means stdout."""
    return path is not None and str(path) == STDOUT


class JsonOut:
    """Write one JSON document to ``dest`` (a file, ``Path('-')`` for stdout, or None for nowhere)."""

    def __init__(self, dest: str | Path | None, *, indent: int | None = 2, allow_nan: bool = True) -> None:
        self.dest = None if dest is None else Path(dest)
        self.indent = indent
        self.allow_nan = allow_nan
        self._pending: str | None = None
        self._saved_fd: int | None = None
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    @property
    def to_stdout(self) -> bool:
        return is_stdout(self.dest)

    @property
    def file(self) -> Path | None:
        """The file written, or None (stdout or nowhere)."""
        return None if self.dest is None or self.to_stdout else self.dest

    def text(self, doc: Any) -> str:
        return json.dumps(doc, indent=self.indent, allow_nan=self.allow_nan) + "\n"

    def write(self, doc: Any) -> Path | None:
        """Write ``doc`` to the file now (atomically) or keep it for stdout; returns the file or None."""
        text = self.text(doc)
        if self.to_stdout:
            self._pending = text
            if self._saved_fd is None and self._redirect is None:  # used without ``with``
                self._flush_pending()
            return None
        if self.dest is None:
            return None

        return write_atomic(self.dest, text)

    def __enter__(self) -> JsonOut:
        if self.to_stdout:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            try:
                self._saved_fd = os.dup(1)
                os.dup2(2, 1)  # child processes and C-level writes inherit stderr as their stdout
            except OSError:
                self._saved_fd = None
            self._redirect = contextlib.redirect_stdout(sys.stderr)
            self._redirect.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.to_stdout:
            return
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        if self._redirect is not None:
            self._redirect.__exit__(exc_type, exc, tb)
            self._redirect = None
        if self._saved_fd is not None:
            os.dup2(self._saved_fd, 1)
            os.close(self._saved_fd)
            self._saved_fd = None
        if exc_type is None:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending is not None:
            sys.stdout.write(self._pending)
            sys.stdout.flush()
            self._pending = None
