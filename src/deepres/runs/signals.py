"""Stopping a run cleanly: the first SIGINT (Ctrl-C) or SIGTERM (SLURM preemption, `kill`) lets the current
iteration finish, saves last.ckpt and stops; a second Ctrl-C aborts at once (atomic writes keep every file whole)."""
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("deepres")


class Interrupted(BaseException):
    """The run stopped on a signal after saving its checkpoint; re-running the same command resumes it.

    A BaseException, like KeyboardInterrupt, so that a sweep stops instead of going on to its next job."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def graceful_stop(request_stop: Callable[[int], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    requested: list[int] = []

    def handler(signum: int, frame) -> None:
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not requested:
            log.warning(f"{signal.Signals(signum).name}: finishing this iteration, saving a checkpoint, stopping "
                        "(Ctrl-C again to abort now)")
            requested.append(signum)
            request_stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
