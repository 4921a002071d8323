"""A steady once-a-second beat for live views whose data comes from calls that
are sometimes slow (an agent busy stopping a guest can hold an instance view
for seconds): the call runs in a background thread, and every beat hands out
the latest answer, new or not, so the picture (its elapsed time at least)
is redrawn on time anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kvmss.base.clock import Clock

T = TypeVar("T")

POLL_SECONDS = 1.0


class Background(Generic[T]):
    """One call of ``fn`` in a daemon thread (a Ctrl-C never waits for it)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._done = threading.Event()
        # A 1-tuple, so that a call returning None is told from one not ended.
        self._value: tuple[T] | None = None
        self._error: BaseException | None = None
        self._fn = fn
        threading.Thread(target=self._run, name="kvmss-lab-poll", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = (self._fn(),)
        except BaseException as e:  # handed to the caller by result()
            self._error = e
        finally:
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """Whether the call has ended, waiting up to ``timeout`` real seconds."""
        return self._done.wait(timeout)

    def result(self) -> T:
        """What the call returned; what it raised is raised here."""
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise RuntimeError("the call has not ended")
        return self._value[0]


def ticks(
    fetch: Callable[[], T], clock: Clock, interval: float = POLL_SECONDS
) -> Iterator[tuple[T, bool]]:
    """Every ``interval``: (the latest answer of ``fetch``, whether it is new).

    The first beat waits for the first answer. A new call starts as soon as
    the previous one has answered, so there is at most one in flight; an
    exception raised by ``fetch`` is raised from here.
    """
    call = Background(fetch)
    call.wait(None)
    latest = call.result()
    fresh = True
    call = Background(fetch)
    while True:
        tick = clock.monotonic()
        yield latest, fresh
        remaining = max(0.0, interval - (clock.monotonic() - tick))
        # The rest of the beat goes to waiting for the answer; once it is
        # in (or the beat is over), the clock's sleep fills what remains.
        fresh = call.wait(remaining)
        if fresh:
            latest = call.result()
            call = Background(fetch)
        clock.sleep(max(0.0, interval - (clock.monotonic() - tick)))
