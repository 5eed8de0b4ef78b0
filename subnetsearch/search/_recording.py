"""How every search is recorded: started in the store, marked finished, interrupted or failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from subnetsearch.storage import Store


class Interrupted(BaseException):  # noqa: N818 -- it is what happened, like KeyboardInterrupt
    """A search stopped by a signal (SIGTERM): recorded as interrupted, resumable by name. A
    BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (a fallback for a
    network FX cannot trace, a runtime's export error) turns it into something else and goes on."""


@contextmanager
def recorded(store: Store, name: str) -> Iterator[dict]:
    """Around a started search (`Store.start_search`): marks it finished with the summary the body
    fills in, interrupted on Ctrl-C or SIGTERM (see `Interrupted`), or failed on an error. Rerunning
    it by name resumes it. Every strategy's search goes through it, training-time ones included."""
    summary: dict = {}
    try:
        yield summary
    except (KeyboardInterrupt, Interrupted) as error:
        store.finish_search(name, "interrupted", {**summary, "error": str(error) or "interrupted (Ctrl-C)"})
        raise
    except BaseException as error:
        store.finish_search(name, "failed", {**summary, "error": f"{type(error).__name__}: {error}"[:500]})
        raise
    store.finish_search(name, "finished", summary)
