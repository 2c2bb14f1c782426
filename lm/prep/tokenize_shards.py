"""Text → token shards, in parallel, with the tokenizer file travelling alongside.

`tokenize_split` encodes documents in a process pool (each worker loads the
tokenizer file once), keeps their order, and writes them with
`lm.data.shards.ShardWriter`, which stores the tokenizer next to the ids. A
shard folder made with another tokenizer is never overwritten silently:
`check_same_tokenizer` names the folder and the two vocabulary sizes.
"""
from __future__ import annotations

import multiprocessing as mp
import itertools
import os
import time
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from lm.errors import MissingFile, UserError
from lm import tokenizer as tokenizer_lib
from lm.data import corpus, shards

_WORKER_TOKENIZER = None


def text_path(config, workdir: str) -> str:
  """config.tokenizer.text, else the web pipeline's output in the workdir."""
  path = config.tokenizer.text or os.path.join(workdir, "clean", "jsonl")
  if not os.path.exists(path):
    raise MissingFile(f"config.tokenizer.text: {path!r} not found (run experiments.prepare_data "
                            f"first or set --config.tokenizer.text)")
  return path


def source_documents(text_path: str, extra: str, extra_fraction: float = 1.0) -> Iterator[str]:
  """The cleaned web text plus, with extra='python_docs', the interpreter's documentation
  (a content-hash-chosen `extra_fraction` of its documents)."""
  if extra not in ("python_docs", "none"):
    raise UserError(f"config.tokenizer.extra: {extra!r} is not one of python_docs, none")
  if not 0 < extra_fraction <= 1:
    raise UserError(f"config.shards.extra_fraction must be in (0, 1], got {extra_fraction}")
  yield from corpus.file_documents(text_path)
  if extra == "python_docs":
    for doc in itertools.chain(corpus.pydoc_topics(), corpus.stdlib_docstrings()):
      if extra_fraction == 1 or corpus.is_heldout("extra/" + doc, extra_fraction):
        yield doc


def _init_worker(tokenizer_path: str) -> None:
  global _WORKER_TOKENIZER
  _WORKER_TOKENIZER = tokenizer_lib.load_tokenizer(tokenizer_path)


def _encode_chunk(docs: Sequence[str]) -> list[np.ndarray]:
  # Arrays, not lists of ints: they pickle back to the parent ~10x faster.
  return [np.asarray(_WORKER_TOKENIZER.encode(d), np.int32) for d in docs]


def check_same_tokenizer(shard_dir: str, tokenizer) -> None:
  """Existing shards in `shard_dir` must come from a tokenizer of the same vocabulary."""
  if not os.path.exists(os.path.join(shard_dir, shards.META)):
    return
  found = shards.read_meta(shard_dir)["vocab_size"]
  if found != tokenizer.vocab_size:
    raise UserError(f"vocabulary mismatch: token shards {shard_dir!r} have vocab_size {found}, the "
                     f"tokenizer has {tokenizer.vocab_size}; delete that folder or pick another workdir")


def tokenize_split(docs: list[str], tokenizer_path: str, out_dir: str, *, workers: int = 2,
                   shard_tokens: int = 1 << 24, desc: str = "tokenize", chunk_docs: int = 256) -> dict:
  """Encodes `docs` into shards at `out_dir`; returns the meta plus bytes, seconds and MB/s."""
  tok = tokenizer_lib.load_tokenizer(tokenizer_path)
  check_same_tokenizer(out_dir, tok)
  chunks = [docs[i:i + chunk_docs] for i in range(0, len(docs), chunk_docs)]
  n_bytes = sum(len(d.encode("utf-8")) for d in docs)
  writer = shards.ShardWriter(out_dir, tok, shard_tokens)
  bar = tqdm(total=n_bytes, desc=desc, unit="B", unit_scale=True, leave=False)
  start = time.perf_counter()
  if workers > 1:
    # fork: workers start in milliseconds and inherit the imported tokenizer code.
    with mp.get_context("fork").Pool(workers, _init_worker, (tokenizer_path,)) as pool:
      for chunk, encoded in zip(chunks, pool.imap(_encode_chunk, chunks)):
        for ids in encoded:
          writer.add(ids)
        bar.update(sum(len(d.encode("utf-8")) for d in chunk))
  else:
    for chunk in chunks:
      for d in chunk:
        writer.add(tok.encode(d))
      bar.update(sum(len(d.encode("utf-8")) for d in chunk))
  meta = writer.close()
  seconds = time.perf_counter() - start
  bar.close()
  return {**meta, "bytes": n_bytes, "seconds": seconds, "mb_per_s": n_bytes / 1e6 / max(seconds, 1e-9),
          "workers": workers}


def bytes_per_token(tokenizer, docs: Sequence[str]) -> float:
  n_bytes = sum(len(d.encode("utf-8")) for d in docs)
  n_tokens = sum(len(tokenizer.encode(d)) for d in docs)
  return n_bytes / max(n_tokens, 1)
