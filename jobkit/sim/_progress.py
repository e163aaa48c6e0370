"""Progress reports for long simulations: a callback, or tqdm's bar if installed."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

__all__ = ["Progress", "ProgressOption", "Reporter"]


@attrs.frozen
class Progress:
    """A snapshot of a running simulation, passed to a progress callback.

    Example::

        >>> from jobkit.sim import Progress
        >>> p = Progress(time=30.0, until=120.0, done=40, jobs=100, attempts=55,
        ...              wall=0.4)
        >>> p.fraction
        0.4
    """

    time: float
    """Virtual seconds since the start."""
    until: float | None
    """The horizon, or None when the run goes on until drained."""
    done: int
    """Jobs in a terminal state."""
    jobs: int
    """Jobs the workload will produce in all."""
    attempts: int
    """Attempts started so far."""
    wall: float
    """Wall-clock seconds so far."""

    @property
    def fraction(self) -> float:
        """How far along the run is, from 0 to 1 (by jobs done, or by time if less)."""
        by_jobs = self.done / self.jobs if self.jobs else 1.0
        if self.until is None or not math.isfinite(self.until) or self.until <= 0:
            return by_jobs
        return min(1.0, max(by_jobs, self.time / self.until))


ProgressOption: TypeAlias = bool | str | Callable[[Progress], object] | None


class _TqdmBar:
    def __init__(self, jobs: int) -> None:
        # tqdm is optional (the progress extra); its notebook widget needs
        # ipywidgets too, else the terminal bar serves in a notebook as well.
        try:
            tqdm = importlib.import_module("tqdm.auto").tqdm
            self._bar: Any = tqdm(total=jobs, unit="job", desc="simulating")
        except ImportError:
            tqdm = importlib.import_module("tqdm").tqdm
            self._bar = tqdm(total=jobs, unit="job", desc="simulating")

    def __call__(self, p: Progress) -> None:
        self._bar.n = p.done
        self._bar.set_postfix_str(f"t={p.time:,.0f}s", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _interactive() -> bool:
    # A bar redrawn in place belongs on a terminal or in a notebook; written
    # to a log file or a CI job's output it is only noise.
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class Reporter:
    """Decides when to report progress, and to whom."""

    def __init__(self, option: ProgressOption, jobs: int) -> None:
        self._callback: Callable[[Progress], object] | None = None
        self._bar: _TqdmBar | None = None
        self._option = option
        self._jobs = jobs
        # "auto": stay silent unless the run turns out to be long.
        self._delay = 3.0 if option in (None, "auto") else 0.0
        # A display is redrawn a few times a second; a callback hears about
        # every 64th finished job, which does not depend on the machine.
        self.interval = 0.2
        if callable(option):
            self._callback = option
            self.interval = 0.0
        elif option not in (None, "auto", True, False):
            raise ValueError(
                f"progress must be True, False, 'auto' or a callable, got {option!r}"
            )
        self.enabled = option is not False and (
            option not in (None, "auto") or _interactive()
        )

    def report(self, p: Progress) -> None:
        if not self.enabled or p.wall < self._delay:
            return
        if self._callback is None:
            try:
                self._bar = _TqdmBar(self._jobs)
            except ImportError:  # no tqdm: no bar
                self.enabled = False
                return
            self._callback = self._bar
        self._callback(p)

    def close(self, p: Progress) -> None:
        if self._callback is not None:
            self._callback(p)
        if self._bar is not None:
            self._bar.close()
