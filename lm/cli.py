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
import re
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


def _unknown_key(detail: str, argv: list[str]) -> str:
  """'unknown config key ...' for an override naming a key the config does not declare.

  ml_collections reports the missing segment repr'd twice over (`'\\'setps\\'\\nDid you mean
  "steps" ...`): unescape it, find the override that names it, and show that override's key."""
  for _ in range(3):  # peel the nested reprs
    detail = detail.replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"').strip().strip('"').strip("'")
  first, *rest = [l.strip() for l in detail.splitlines() if l.strip()] or [""]
  segment = first.strip("'\"")
  overrides = [a[2:].split("=")[0] for a in argv if a.startswith("--config.")]
  named = [o for o in overrides if segment in o.split(".")]
  key = named[0] if named else segment
  hint = re.search(r'Did you mean "([^"]+)"', " ".join(rest))
  hint = f"did you mean {hint.group(1)!r}? " if hint else ""
  return f"unknown config key {key!r} ({hint}every key must be declared in the config file)"


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except _PARSE_ERRORS as e:
    detail = str(e).strip()
    if isinstance(e, (AttributeError, KeyError)):
      fail(_unknown_key(detail, argv))
    lines = [l.strip() for l in detail.splitlines() if l.strip()]
    if len(lines) == 1 and lines[0].startswith("flag --config."):  # a value of the wrong type
      fail(f"{lines[0][len('flag '):]} (give a value of the type the config file declares)")
    last = lines[-1] if lines else type(e).__name__
    # An exception a config file raised arrives as the last line of a quoted traceback.
    last = re.sub(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|File): ", "", last)
    fail(last)
  return []


def check_model_flags() -> None:
  """The sampling flags of sample/chat, checked before any model is loaded."""
  m = model_flags()
  if m.max_new_tokens.value < 1:
    raise UserError(f"--max_new_tokens must be at least 1, got {m.max_new_tokens.value}")
  if m.temperature.value < 0:
    raise UserError(f"--temperature must be >= 0 (0 is greedy), got {m.temperature.value}")
  if m.top_k.value < 0:
    raise UserError(f"--top_k must be >= 0 (0: off), got {m.top_k.value}")
  if not 0 < m.top_p.value <= 1:
    raise UserError(f"--top_p must be in (0, 1] (1: off), got {m.top_p.value}")
  if m.step.value is not None and m.step.value < 0:
    raise UserError(f"--step must be >= 0 (leave it unset for the newest), got {m.step.value}")


def guard(fn: Callable[[], object]) -> object:
  """Runs fn; a UserError becomes one line and exit 2 (with its traceback under --verbose)."""
  try:
    return fn()
  except UserError as e:
    if _VERBOSE.value:
      traceback.print_exc()
    fail(_one_line(e))
  except KeyboardInterrupt:  # Ctrl-C before training starts (in training, lm/loop.py saves first)
    print("interrupted", file=sys.stderr, flush=True)
    sys.exit(130)


def run(setup: Callable[[], object], work: Callable[[object], object], required=("config", "workdir")):
  """Parse flags, run `setup()` then `work(setup_result)`, user errors as one-liners."""
  def main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    logging.set_verbosity(logging.WARNING)
    # Piped into a log or a pipeline, stdout would be block-buffered and its lines (evaluations) would
    # arrive long after the progress bar's on stderr; one line at a time keeps them in order.
    if hasattr(sys.stdout, "reconfigure"):
      sys.stdout.reconfigure(line_buffering=True)
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
