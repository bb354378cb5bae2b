"""SIGINT / SIGTERM as a request to stop cleanly: finish the step, write a checkpoint, exit."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable flag for ``Trainer.run(should_stop=...)``, set by the first SIGINT or SIGTERM.

    The first signal only records itself, so the step in progress finishes and the trainer writes
    a checkpoint. A second signal of either kind means "now": the previous handlers come back and
    the signal is re-sent, so Ctrl-C twice still interrupts a run stuck in a long evaluation.

    Example:
        >>> stop = StopRequest()
        >>> with stop.installed():
        ...     trainer.run(should_stop=stop)
        >>> if stop.signum is not None:
        ...     sys.exit(stop.exit_code)
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 0 if self.signum is None else 128 + self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self._restore()
        signal.raise_signal(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT and SIGTERM inside the block; handlers can only be set in the main thread,
        so elsewhere (a worker thread calling the CLI) the block runs with the signals untouched."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in STOP_SIGNALS:
            # A signal the parent chose to ignore (a background job's SIGINT) stays ignored.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            self._restore()
