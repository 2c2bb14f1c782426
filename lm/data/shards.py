"""Token shards: the on-disk format between tokenization and the training loader.

A shard folder holds
  meta.json         {"format", "dtype", "vocab_size", "bos_id", "tokenizer", "shards": [...]}
  shard_00000.bin   raw little-endian token ids, documents back to back, each
                    starting with BOS (so document boundaries survive packing)
  tokenizer file    the tokenizer that made the ids (its name is in meta.json)

Shards are read with `np.memmap`, so a loader touches only the rows it serves.
`check_vocab` turns a tokenizer/shard/checkpoint mismatch into a one-line error.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Sequence

import numpy as np

from lm.errors import MissingFile, UserError

FORMAT = "lm-token-shards/1"
META = "meta.json"


class ShardWriter:
  """Appends documents (lists of ids) to fixed-size shards; `close()` writes meta.json."""

  def __init__(self, out_dir: str, tokenizer, shard_tokens: int = 1 << 26):
    self.out_dir = out_dir
    self.tokenizer = tokenizer
    self.shard_tokens = shard_tokens
    self.dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    self.shards: list[dict] = []
    self._buf: list[np.ndarray] = []
    self._buf_tokens = 0
    self._buf_docs = 0
    os.makedirs(out_dir, exist_ok=True)

  def add(self, ids: Sequence[int]) -> None:
    """Adds one document; BOS is prepended here, callers pass plain token ids."""
    arr = np.empty(len(ids) + 1, self.dtype)
    arr[0] = self.tokenizer.bos_id
    arr[1:] = ids
    self._buf.append(arr)
    self._buf_tokens += arr.size
    self._buf_docs += 1
    if self._buf_tokens >= self.shard_tokens:
      self._flush()

  def _flush(self) -> None:
    if not self._buf:
      return
    name = f"shard_{len(self.shards):05d}.bin"
    tmp = os.path.join(self.out_dir, name + ".tmp")
    np.concatenate(self._buf).astype("<" + np.dtype(self.dtype).str[1:]).tofile(tmp)
    os.replace(tmp, os.path.join(self.out_dir, name))
    self.shards.append({"file": name, "num_tokens": self._buf_tokens, "num_docs": self._buf_docs})
    self._buf, self._buf_tokens, self._buf_docs = [], 0, 0

  def close(self) -> dict:
    self._flush()
    tok_file = getattr(self.tokenizer, "file_name", "tokenizer.json")
    self.tokenizer.save(os.path.join(self.out_dir, tok_file))
    meta = {
        "format": FORMAT,
        "dtype": np.dtype(self.dtype).name,
        "vocab_size": int(self.tokenizer.vocab_size),
        "bos_id": int(self.tokenizer.bos_id),
        "tokenizer": tok_file,
        "shards": self.shards,
        "num_tokens": int(sum(s["num_tokens"] for s in self.shards)),
        "num_docs": int(sum(s["num_docs"] for s in self.shards)),
    }
    tmp = os.path.join(self.out_dir, META + ".tmp")
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(self.out_dir, META))  # meta.json last: its presence means complete
    return meta


def write_shards(docs: Iterable[Sequence[int]], tokenizer, out_dir: str, shard_tokens: int = 1 << 26) -> dict:
  writer = ShardWriter(out_dir, tokenizer, shard_tokens)
  for ids in docs:
    writer.add(ids)
  return writer.close()


def read_meta(shard_dir: str) -> dict:
  path = os.path.join(shard_dir, META)
  if not os.path.exists(path):
    raise MissingFile(f"token shards: {path!r} not found (run experiments.prepare_data or point data.path at text)")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise UserError(f"token shards: {path!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


class TokenShards:
  """Read-only view of a shard folder: memory-mapped arrays, one per shard."""

  def __init__(self, shard_dir: str):
    self.dir = shard_dir
    self.meta = read_meta(shard_dir)
    self.vocab_size = self.meta["vocab_size"]
    self.bos_id = self.meta["bos_id"]
    self.arrays = [
        np.memmap(os.path.join(shard_dir, s["file"]), dtype=self.meta["dtype"], mode="r")
        for s in self.meta["shards"]
    ]

  @property
  def tokenizer_path(self) -> str:
    return os.path.join(self.dir, self.meta["tokenizer"])

  @property
  def num_tokens(self) -> int:
    return self.meta["num_tokens"]


def check_vocab(expected: int, found: int, what: str) -> None:
  if expected != found:
    raise UserError(f"vocabulary mismatch: {what} has vocab_size {found}, expected {expected}")


def copy_tokenizer(shard_dir: str, dest_dir: str) -> str:
  meta = read_meta(shard_dir)
  dest = os.path.join(dest_dir, meta["tokenizer"])
  shutil.copyfile(os.path.join(shard_dir, meta["tokenizer"]), dest)
  return dest
