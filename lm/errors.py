"""Errors a user can cause, apart from bugs.

A `UserError` (a bad config value, a missing or malformed file, a mesh that does
not fit) is reported by the command line as one line naming the key or file and
what to do, exit status 2, no traceback (`lm/cli.py`). Anything else is a bug
and prints its traceback. They subclass the built-in types they replace, so
`except ValueError` / `except FileNotFoundError` callers keep working.
"""
from __future__ import annotations


class UserError(ValueError):
  """Wrong input: the message names the config key or the file (and line) and what to do."""


class MissingFile(UserError, FileNotFoundError):
  """A file or folder the user named does not exist."""
