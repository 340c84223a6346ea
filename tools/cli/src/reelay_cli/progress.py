"""How a file upload shows its progress: Rich's bar on a terminal, plain lines otherwise.

On a terminal (stderr is one) rich.progress draws bytes sent, rate and time left. Anywhere else (a
CI log, a pipe) a bar would be a stream of control characters, so a line is written at each tenth
of the file instead. Both go to stderr: stdout is kept for the result (and for --json).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

PLAIN_STEP_PERCENT = 10


@contextmanager
def upload_progress(
    console: Console, name: str, total: int, *, plain: bool
) -> Iterator[Callable[[int], None]]:
    """A callback taking the bytes sent so far, drawing them while the block runs."""
    if plain:
        yield PlainProgress(console, name, total).update
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(name, total=total)
        yield lambda sent: progress.update(task, completed=sent)


class PlainProgress:
    """One line per PLAIN_STEP_PERCENT of the file, each said once (httpx may rewind the file)."""

    def __init__(self, console: Console, name: str, total: int) -> None:
        self._console = console
        self._name = name
        self._total = total
        self._said = -1

    def update(self, sent: int) -> None:
        percent = 100 if self._total <= 0 else min(100, sent * 100 // self._total)
        step = percent - percent % PLAIN_STEP_PERCENT
        if step > self._said:
            self._said = step
            self._console.print(
                f"uploading {self._name}: {step}% ({sent} of {self._total} bytes)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
