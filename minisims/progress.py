"""Progress for long work: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns, which a log file keeps as one endless line. So a bar
is drawn only where someone watches it (standard error is a terminal, or a Jupyter kernel runs
the code); anywhere else the same calls write one plain line now and then::

    train: 40% (400/1000 step), 12 s, loss=0.53

at most every ``LOG_SECONDS`` and only after ``LOG_PERCENT`` more of the work, and one last line
when the work is done. Every command's ``--quiet`` turns both off (the caller passes no bar).
"""
from __future__ import annotations

import sys
import time

LOG_SECONDS = 10.0   # a log gets a line at most this often ...
LOG_PERCENT = 10.0   # ... and only after this much more of the work


def watched(stream=None) -> bool:
    """Is someone watching ``stream`` (default standard error): a terminal or a notebook?"""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def bar(iterable=None, *, total=None, desc: str = "", unit: str = "it", leave: bool = True,
        initial: int = 0):
    """A progress bar over ``iterable`` (or ``total`` units, moved with ``update``): tqdm where
    someone watches standard error, else a :class:`LogLines` with the same calls."""
    if watched():
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial)
    return LogLines(iterable, total=total, desc=desc, unit=unit, initial=initial)


class LogLines:
    """tqdm's ``update``/``set_postfix``/``close`` and iteration, written as whole lines."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, file=None,
                 clock=time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.postfix, self.file, self.clock = initial, "", file, clock
        self.t0 = self.t_line = clock()
        self.n_line, self.closed, self.last = initial, False, None

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        step = (self.n - self.n_line) / self.total * 100 if self.total else float("inf")
        if now - self.t_line >= LOG_SECONDS and step >= LOG_PERCENT:
            self._line(now)

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        """The last line, once the work is done; work cut short (Ctrl-C, an error) adds none, so
        the reason it ended is the last line of the log."""
        if not self.closed:
            self.closed = True
            done = self.total is None or self.n >= self.total
            if done and self.last != (self.n, self.postfix):  # not the line just written again
                self._line(self.clock())

    def _line(self, now: float) -> None:
        self.t_line, self.n_line, self.last = now, self.n, (self.n, self.postfix)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f"{100 * self.n / self.total:.0f}% " if self.total else ""
        text = f"{self.desc}: {pct}({done} {self.unit}), {now - self.t0:.0f} s"
        text += f", {self.postfix}" if self.postfix else ""
        print(text, file=self.file or sys.stderr, flush=True)
