"""Text corpora as iterables of documents (str).

`default_documents()` is the embedded default: real English that every Python
install carries — the interpreter's help topics (`pydoc_data.topics`) and the
docstrings of the standard library's modules, classes and functions, parsed
from source with `ast` (nothing is imported or executed) — plus the clean pages
of the synthetic world (`lm/prep/synthetic.py`, seed 0), whose facts later
stages ask about. It is made at run time, never copied into the repository.

`file_documents(path)` reads .txt (documents separated by blank lines),
.jsonl / .jsonl.gz (a `text` field) and .parquet (a `text` column), or every
such file under a folder.
"""
from __future__ import annotations

import ast
import glob
import gzip
import hashlib
import json
import os
import sysconfig
from typing import Any, Iterable, Iterator

from lm.errors import MissingFile, UserError

class MissingField(UserError, KeyError):
  """A record without the configured text field (still a KeyError for callers that catch that)."""
  __str__ = UserError.__str__


TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".json.gz", ".parquet")


def pydoc_topics() -> Iterator[str]:
  from pydoc_data import topics
  for name in sorted(topics.topics):
    text = topics.topics[name].strip()
    if text:
      yield text


_SKIP_DIRS = {"site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo", "__pycache__"}


def _stdlib_sources() -> list[str]:
  """The standard library's .py files, never descending into installed packages or tests."""
  stdlib = sysconfig.get_paths()["stdlib"]
  paths = []
  for root, dirs, files in os.walk(stdlib):
    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(("test", "config-")))
    paths += [os.path.join(root, f) for f in files if f.endswith(".py")]
  return sorted(paths)


def stdlib_docstrings(min_chars: int = 200) -> Iterator[str]:
  """Module docstrings plus their class/function docstrings, one document per module."""
  for path in _stdlib_sources():
    try:
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    parts = []
    for node in [tree, *ast.walk(tree)]:
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc and len(doc) > 40:
          parts.append(doc.strip())
    text = "\n\n".join(dict.fromkeys(parts))
    if len(text) >= min_chars:
      yield text


def default_documents() -> Iterator[str]:
  from lm.prep import synthetic
  yield from pydoc_topics()
  yield from stdlib_docstrings()
  yield from synthetic.clean_documents(seed=0)


def _text_file_documents(path: str) -> Iterator[str]:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
  for doc in text.split("\n\n"):
    if doc.strip():
      yield doc.strip("\n")


def jsonl_rows(path: str, expect: str = "") -> Iterator[tuple[int, Any]]:
  """(line number, parsed JSON) for each non-blank line of a .jsonl or .jsonl.gz file.

  A line that is not JSON, or a file that is not UTF-8 or a broken .gz, is a one-line
  UserError naming `path:line`; `expect` ends the message ("each line must be one JSON
  object<expect>"). Callers check the objects' shape themselves."""
  opener = gzip.open if path.endswith(".gz") else open
  lineno = 0
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line.rstrip("\r\n"))  # columns count within the line
        except json.JSONDecodeError as e:
          raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); each line must be "
                          f"one JSON object{expect}") from None
        yield lineno, row
  except (UnicodeDecodeError, OSError, EOFError) as e:  # not UTF-8, or a broken .gz
    raise UserError(f"{path}:{lineno + 1}: unreadable ({e}); expected UTF-8 JSON lines") from None


def _jsonl_documents(path: str, field: str) -> Iterator[str]:
  for lineno, row in jsonl_rows(path, f" with a {field!r} field"):
    if not isinstance(row, dict) or field not in row:
      what = f"no {field!r} field" if isinstance(row, dict) else f"a {type(row).__name__}, not an object"
      raise MissingField(f"{path}:{lineno}: {what}; each line needs a {field!r} string "
                         f"(or set config.data.text_field)")
    if row[field] is None:  # a null text: no document
      continue
    if not isinstance(row[field], str):
      raise UserError(f"{path}:{lineno}: field {field!r} is a {type(row[field]).__name__}, not a string")
    yield row[field]


def _parquet_documents(path: str, field: str) -> Iterator[str]:
  import pyarrow as pa
  import pyarrow.parquet as pq
  try:
    names = pq.read_schema(path).names
  except (pa.ArrowException, OSError) as e:
    raise UserError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
  if field not in names:
    raise MissingField(f"{path}: no {field!r} column (it has {', '.join(names) or 'none'}); "
                    f"set config.data.text_field to the text column")
  table = pq.read_table(path, columns=[field])
  for i, text in enumerate(table.column(field).to_pylist()):
    if text is None:
      continue
    if not isinstance(text, str):
      raise UserError(f"{path}: row {i} of column {field!r} is a {type(text).__name__}, not a string")
    yield text


def _first_line(e: BaseException) -> str:
  return next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)


def _file_documents(path: str, text_field: str) -> Iterator[str]:
  if not os.path.exists(path):
    raise MissingFile(f"data.path: no such file or folder {path!r}")
  if os.path.isdir(path):
    files = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if p.endswith(TEXT_SUFFIXES))
    if not files:
      raise MissingFile(f"data.path: folder {path!r} has no {'/'.join(TEXT_SUFFIXES)} files")
    for p in files:
      yield from _file_documents(p, text_field)
  elif path.endswith(".txt"):
    yield from _text_file_documents(path)
  elif path.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
    yield from _jsonl_documents(path, text_field)
  elif path.endswith(".parquet"):
    yield from _parquet_documents(path, text_field)
  else:
    raise UserError(f"data.path: {path!r} is not one of {TEXT_SUFFIXES}")


def file_documents(path: str, text_field: str = "text") -> Iterator[str]:
  """The documents of a file or folder; malformed input is a UserError naming the file (and line)."""
  n = 0
  for doc in _file_documents(path, text_field):
    n += 1
    yield doc
  if n == 0:
    raise UserError(f"{path}: no documents (the file{'s are' if os.path.isdir(path) else ' is'} empty); "
                    f"point data.path at text")


def documents(path: str, text_field: str = "text") -> Iterator[str]:
  """'default' for the embedded corpus, else a file or folder."""
  return default_documents() if path == "default" else file_documents(path, text_field)


def is_heldout(doc: str, fraction: float) -> bool:
  """Deterministic split by content hash: the same document always lands on the same side."""
  h = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "little")
  return (h % 1_000_000) < fraction * 1_000_000


def split(docs: Iterable[str], fraction: float) -> tuple[list[str], list[str]]:
  train, val = [], []
  for d in docs:
    (val if is_heldout(d, fraction) else train).append(d)
  return train, val
