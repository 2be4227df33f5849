"""Console output: progress bars only on a terminal, never under CI, so logs stay readable; in a
multi-process run only rank 0 speaks; a command that runs many others (`ulmfit curve`) keeps their lines
to itself (`quiet`)."""
import contextvars
import os
import sys
from contextlib import contextmanager

from tqdm.auto import tqdm

from ulmfit_cli.ranks import is_main


def show_bars() -> bool:
    """Progress bars make sense only when a person watches a terminal."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def progress(iterable=None, **kwargs):
    """A tqdm bar that disappears (and prints nothing) when bars are off."""
    return tqdm(iterable, disable=not show_bars(), dynamic_ncols=True, **kwargs)


_QUIET = contextvars.ContextVar("ulmfit_quiet", default=False)


@contextmanager
def quiet():
    """No status lines (`info`) inside the block: the runs a command makes by the dozen report through it."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def info(msg: str) -> None:
    """A status line on stderr."""
    if is_main() and not _QUIET.get():
        print(msg, file=sys.stderr, flush=True)
