"""User-facing errors: one clear line, exit code 2, no traceback."""
from __future__ import annotations

import functools
import logging
import sys


class UserError(Exception):
    """A mistake the user can fix (bad params, missing credentials, unusable data).

    The message must name the file or key, say what was wrong and how to fix it.
    """

    exit_code = 2


def cli_entry(func):
    """Run a stage or command: log to stderr, and turn a UserError into one line on stderr and exit
    code 2 (or its own), a Ctrl-C into one line and exit code 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
