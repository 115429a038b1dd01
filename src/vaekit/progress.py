"""Progress of long loops: a tqdm bar on a terminal, a line every few seconds elsewhere.

When the output is not a terminal (a log file, a batch job, CI) a bar would print nothing
useful, so :class:`Progress` writes one line every ``every`` seconds instead, with the work
done and an estimate of the time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class Progress:
    """``total`` units of work named ``desc``.

    Args:
        enabled: show anything at all.
        log: where the lines go when the output is not a terminal (default stderr).
        every: seconds between lines (default :attr:`DEFAULT_EVERY`).
        terminal: force the bar (True) or the lines (False); default: a bar when stderr is a
            terminal.
    """

    DEFAULT_EVERY = 10.0

    def __init__(self, total: int, desc: str, *, unit: str = "it", enabled: bool = True,
                 log: Callable[[str], None] | None = None, every: float | None = None,
                 terminal: bool | None = None, initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.log = log or _stderr
        self.every = self.DEFAULT_EVERY if every is None else every
        self.bar = None
        self.lines = False
        if enabled:
            tty = sys.stderr.isatty() if terminal is None else terminal
            if tty:
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                                dynamic_ncols=True, leave=False)
            else:
                self.lines = True
                self.log(f"{desc}: {total} {unit}s")
        self.start = time.perf_counter()
        self.last = self.start
        self.first = initial

    @property
    def active(self) -> bool:
        """Whether anything is shown (callers skip work done only for the display)."""
        return self.bar is not None or self.lines

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
        elif self.lines:
            now = time.perf_counter()
            if now - self.last >= self.every and self.done < self.total:
                self.last = now
                rate = (self.done - self.first) / max(now - self.start, 1e-9)
                left = (self.total - self.done) / rate if rate > 0 else float("inf")
                extra = f", {postfix}" if postfix else ""
                self.log(f"{self.desc}: {self.done}/{self.total} {self.unit}s "
                         f"({self.done / max(self.total, 1):.0%}){extra}, "
                         f"{_seconds(now - self.start)} so far, about {_seconds(left)} left")

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
