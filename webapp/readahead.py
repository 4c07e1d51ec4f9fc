"""An iterator run by a thread of its own, a few items ahead of the code that consumes it.

An export alternates between its Python work and waiting for PostgreSQL, which runs on the other core.
With the next batch fetched by a thread, those waits overlap the work: psycopg releases the GIL while it
waits for the server. (Where both sides are Python work, as an import's parsing and writing, a thread
only adds GIL contention: the import uses a child process instead, webapp/importing/reader.py.)
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Raised:
    """An exception from the producing thread, handed over to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(source: Iterable[T], *, depth: int = 2, name: str = "read-ahead") -> Generator[T, None, None]:
    """Yield the items of `source`, produced in a thread while the caller works on the previous ones.

    At most `depth` items wait. An exception in `source` is raised to the caller where the item would
    have come. Closing the iterator early (break, an exception in the caller) stops the thread before
    `source` is asked for another item, and waits for the one it is producing, so that nothing else
    uses what `source` uses (a database cursor, say) once this returns.
    """
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            iterator = iter(source)
            while not stop.is_set():
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                items.put(item)
        except BaseException as exc:  # raised in the consumer
            items.put(_Raised(exc))
        finally:
            items.put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to put, then let it finish its item
            with contextlib.suppress(queue.Empty):
                items.get(timeout=0.05)
        thread.join()
