"""The command-line shell shared by every experiment entry point.

    python -m experiments.<kind> --config=configs/<file>.py:<arg> --workdir=<dir> [--config.key=value]

Errors a user can cause — an unknown or mistyped config key, a bad value, a
missing file, a mesh or batch that does not fit — end the process with one
line on stderr naming the key or file, and exit status 2, before anything is
compiled or any checkpoint is touched.
"""
from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags, logging

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, AttributeError, TypeError, flags.Error)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except USER_ERRORS as e:
    detail = str(e).strip().strip('"').strip("'")
    if isinstance(e, (AttributeError, KeyError)):
      overrides = [a[2:].split("=")[0] for a in argv if a.startswith("--config.")]
      named = [o for o in overrides if detail in o.split(".")]
      detail = (f"unknown config key {named[0] if named else detail!r} "
                f"(every key must be declared in the config file)")
    lines = [l for l in detail.splitlines() if l.strip()]
    fail(lines[-1].strip() if lines else type(e).__name__)
  return []


def run(setup: Callable[[], object], work: Callable[[object], object], required=("config", "workdir")):
  """Parse flags, run `setup()` with user errors as one-liners, then `work(setup_result)`."""
  def main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    logging.set_verbosity(logging.WARNING)
    try:
      prepared = setup()
    except USER_ERRORS as e:
      fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    work(prepared)

  for name in required:
    flags.mark_flag_as_required(name)
  app.run(main, flags_parser=_parse)
