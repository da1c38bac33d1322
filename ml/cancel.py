"""Stopping a long training or retraining early: the caller passes `should_stop`, a cheap function
(it is called every training batch) that says whether to stop; the work raises `Cancelled` at its
next check. No TensorFlow here, so a web or serving process can catch `Cancelled` without it."""

from __future__ import annotations

from typing import Callable

ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """`should_stop` asked the work to stop; it stopped without finishing."""


def raise_if_stopped(should_stop: ShouldStop | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("stopped on request")
