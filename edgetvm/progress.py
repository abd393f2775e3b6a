"""What a long step is doing and how far it is: stage lines and progress bars on stderr.

The layers below the CLI call :func:`stage` around a step and :func:`bar` around a loop whose length
they know (calibration samples, kernels, download bytes); both cost nothing while progress is off.
It is off by default, so the Python API and tests print nothing: ``edgetvm.compile(...,
progress=True)`` turns it on for one call (:func:`shown`), and the CLI turns it on for a command
when stderr is a terminal and ``--quiet`` is not given (:func:`enable`). Bars are ``tqdm``'s.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_lock = threading.Lock()
_depth = 0  # > 0: on (enable() or an open shown(True))


def enabled() -> bool:
    return _depth > 0


def enable(on: bool = True) -> None:
    """Switch progress on or off for the rest of the process (the CLI's choice)."""
    global _depth
    with _lock:
        _depth = 1 if on else 0


@contextmanager
def shown(on: bool | None) -> Iterator[None]:
    """Progress on inside the block when ``on`` is True; None or False leave the current choice."""
    global _depth
    if not on:
        yield
        return
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth = max(_depth - 1, 0)


def with_progress(function: Callable[..., T]) -> Callable[..., T]:
    """Give ``function`` a keyword ``progress``: True shows progress during the call (:func:`shown`)."""
    @functools.wraps(function)
    def call(*args, progress: bool | None = None, **kwargs):
        with shown(progress):
            return function(*args, **kwargs)

    return call


def say(line: str) -> None:
    """One line on stderr (between bars, not through them), when progress is on."""
    if enabled():
        tqdm.write(f"edgetvm: {line}", file=sys.stderr)


@contextmanager
def stage(what: str) -> Iterator[None]:
    """``what`` when the step starts, and its time when it ends; nothing when progress is off."""
    if not enabled():
        yield
        return
    started = time.perf_counter()
    say(f"{what} ...")
    yield
    say(f"{what}: done in {time.perf_counter() - started:.1f} s")


def bar(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
        unit_scale: bool = False) -> Iterable[T]:
    """``items`` unchanged, with a bar on stderr while progress is on."""
    if not enabled():
        return items
    return tqdm(items, total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def counter(total: int | None, *, desc: str = "", unit: str = "it", unit_scale: bool = False):
    """A bar to ``update(n)`` by hand (downloads); a no-op object while progress is off."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=not enabled())
