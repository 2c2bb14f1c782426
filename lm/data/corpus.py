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
from typing import Iterable, Iterator

from lm.errors import MissingFile, UserError

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
  with open(path, encoding="utf-8") as f:
    text = f.read()
  for doc in text.split("\n\n"):
    if doc.strip():
      yield doc.strip("\n")


def _jsonl_documents(path: str, field: str) -> Iterator[str]:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      if field not in row:
        raise KeyError(f"{path}:{lineno}: no {field!r} field (data.text_field)")
      yield row[field]


def _parquet_documents(path: str, field: str) -> Iterator[str]:
  import pyarrow.parquet as pq
  table = pq.read_table(path, columns=[field])
  yield from table.column(field).to_pylist()


def file_documents(path: str, text_field: str = "text") -> Iterator[str]:
  if not os.path.exists(path):
    raise MissingFile(f"data.path: no such file or folder {path!r}")
  if os.path.isdir(path):
    files = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if p.endswith(TEXT_SUFFIXES))
    if not files:
      raise MissingFile(f"data.path: folder {path!r} has no {'/'.join(TEXT_SUFFIXES)} files")
    for p in files:
      yield from file_documents(p, text_field)
  elif path.endswith(".txt"):
    yield from _text_file_documents(path)
  elif path.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
    yield from _jsonl_documents(path, text_field)
  elif path.endswith(".parquet"):
    yield from _parquet_documents(path, text_field)
  else:
    raise UserError(f"data.path: {path!r} is not one of {TEXT_SUFFIXES}")


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
