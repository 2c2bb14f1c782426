"""The command-line shell shared by every experiment entry point.

    python -m experiments.<kind> --config=configs/<file>.py:<arg> --workdir=<dir> [--config.key=value]

Errors a user can cause — an unknown or mistyped config key, a bad value, a
missing file, a mesh or batch that does not fit — end the process with one
line on stderr naming the key or file, and exit status 2, before anything is
compiled or any checkpoint is touched. In set-up and in the work these are
`lm.errors.UserError`s; anything else is a bug and keeps its traceback.
`--verbose` prints the traceback of user errors too.
"""
from __future__ import annotations

import functools
import sys
import traceback
import types
from typing import Callable

from absl import app, flags, logging

from lm.errors import UserError

# While flags are parsed, a config file's get_config or an override can only fail on user input.
_PARSE_ERRORS = (ValueError, FileNotFoundError, KeyError, AttributeError, TypeError, flags.Error)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print tracebacks of user errors as well.")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _one_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[0] if lines else type(e).__name__


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except _PARSE_ERRORS as e:
    detail = str(e).strip().strip('"').strip("'")
    if isinstance(e, (AttributeError, KeyError)):
      overrides = [a[2:].split("=")[0] for a in argv if a.startswith("--config.")]
      named = [o for o in overrides if detail in o.split(".")]
      detail = (f"unknown config key {named[0] if named else detail!r} "
                f"(every key must be declared in the config file)")
    lines = [l for l in detail.splitlines() if l.strip()]
    fail(lines[-1].strip() if lines else type(e).__name__)
  return []


def guard(fn: Callable[[], object]) -> object:
  """Runs fn; a UserError becomes one line and exit 2 (with its traceback under --verbose)."""
  try:
    return fn()
  except UserError as e:
    if _VERBOSE.value:
      traceback.print_exc()
    fail(_one_line(e))


def run(setup: Callable[[], object], work: Callable[[object], object], required=("config", "workdir")):
  """Parse flags, run `setup()` then `work(setup_result)`, user errors as one-liners."""
  def main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    logging.set_verbosity(logging.WARNING)
    prepared = guard(setup)
    guard(lambda: work(prepared))

  for name in required:
    flags.mark_flag_as_required(name)
  app.run(main, flags_parser=_parse)


@functools.cache
def model_flags() -> types.SimpleNamespace:
  """The flags of tools that run a trained model (sample, chat): defined once per process."""
  return types.SimpleNamespace(
      workdir=flags.DEFINE_string("workdir", None, "A training run's workdir: its newest checkpoint is loaded."),
      hf_dir=flags.DEFINE_string("hf_dir", None, "Or: a Hugging Face folder (config.json + safetensors)."),
      step=flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest)."),
      tokenizer=flags.DEFINE_string("tokenizer", None,
                                    "Override: byte | hf (the folder's tokenizer.json) | a saved tokenizer file."),
      max_new_tokens=flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate per sample."),
      temperature=flags.DEFINE_float("temperature", 0.8, "0 is greedy."),
      top_k=flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: off)."),
      top_p=flags.DEFINE_float("top_p", 0.95, "Nucleus mass to keep (1: off)."),
      seed=flags.DEFINE_integer("seed", 0, "Sampling seed."),
      prompt=flags.DEFINE_string("prompt", "", "Text to continue / the one message to answer."),
  )


def unescape(text: str) -> str:
  """Backslash escapes typed on a command line (\\n) as the characters they name."""
  return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text
