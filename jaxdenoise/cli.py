"""What every command-line script shares: flag parsing and errors as one line, not a traceback.

``cli.run(main)`` replaces ``absl.app.run(main)``. A mistyped config field, a bad flag value, a config file
that is missing, and every error jaxdenoise raises for the user (``ValueError`` and its subclasses,
``errors.RunError``, an ``OSError`` such as a full disk or a read-only folder) end the process with
``error: <one line>`` on stderr and exit status 1.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, List

from absl import app, flags

from jaxdenoise import errors, fsutil

_DID_YOU_MEAN = re.compile(r"Did you mean \"([\w.]+)\" instead of \"([\w.]+)\"")


def describe(e: BaseException) -> str:
    """One line for the user: what went wrong and, where we know it, what to do."""
    if isinstance(e, OSError) and not isinstance(e, errors.RunError):
        return fsutil.describe(e)
    text = str(e)
    m = _DID_YOU_MEAN.search(text.replace("\\n", "\n").replace('\\"', '"'))
    if m:
        return f"unknown config field {m.group(2)!r} (did you mean {m.group(1)!r}?)"
    if isinstance(e, (AttributeError, KeyError)):
        name = fsutil.first_line(e).strip("'\"\\")
        return f"unknown config field {name!r}"
    return fsutil.first_line(e, limit=400)


def parse_flags(argv: List[str]) -> List[str]:
    """absl's parsing, with every failure (bad value, unknown config field, missing config file) one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {fsutil.first_line(e)} (--helpshort lists the flags)")
    except (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError, ImportError) as e:
        sys.exit(f"error: {describe(e)}")


USER_ERRORS = (ValueError, ImportError, errors.RunError, OSError)


def run(main: Callable[[List[str]], None]) -> None:
    """``app.run(main)`` with one-line errors for bad flags and for every user-facing error ``main`` raises."""
    def wrapped(argv):
        try:
            main(argv)
        except USER_ERRORS as e:
            sys.exit(f"error: {describe(e)}")
    app.run(wrapped, flags_parser=parse_flags)
