"""What the trainer callbacks share: one watch per training run, entered and left by
callbacks, and never left open by a training that raised."""

from __future__ import annotations

import atexit
import weakref

#: Watches entered by a callback and not yet left, so that a training that raised
#: (transformers calls no callback then) does not leave one open: the next training's
#: callback, or the end of the process, closes it.
_open: weakref.WeakSet = weakref.WeakSet()


def enter(model, optimizer, options: dict):
    """A watch around the training about to start (a stale one is closed first)."""
    from gradviz.show import watch as gradviz_watch

    close_stale()
    watch = gradviz_watch(model, optimizer, **options)
    watch.__enter__()
    _open.add(watch)
    return watch


def leave(watch, error: BaseException | None = None) -> None:
    if watch is None or watch not in _open:
        return
    _open.discard(watch)
    if error is None:
        watch.__exit__(None, None, None)
    else:
        watch.__exit__(type(error), error, error.__traceback__)


def close_stale() -> None:
    """Close watches whose training raised before their callback could: status failed."""
    for watch in list(_open):
        leave(watch, RuntimeError("the training ended without telling its callbacks"))


atexit.register(close_stale)
