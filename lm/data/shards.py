"""Token shards: the on-disk format between tokenization and the training loader.

A shard folder holds
  meta.json         {"format", "dtype", "vocab_size", "bos_id", "tokenizer", "tokenizer_fingerprint",
                     "shards": [{"file", "num_tokens", "num_docs", "bytes", "sha256"}, ...]}
  shard_00000.bin   raw little-endian token ids, documents back to back, each
                    starting with BOS (so document boundaries survive packing)
  tokenizer file    the tokenizer that made the ids (its name is in meta.json)

Shards are read with `np.memmap`, so a loader touches only the rows it serves.
`check_vocab` turns a tokenizer/shard/checkpoint mismatch into a one-line error.

Integrity: opening a folder compares every shard's size on disk with meta.json
(cheap, always); `TokenShards.verify()` re-hashes every shard against its
"sha256" (metas written before these fields existed load without the hash
check). `TokenShards.tokenizer_fingerprint` (sha256 of the tokenizer file's
bytes) lets a resume compare a checkpoint's tokenizer with the shards'.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Iterable, Sequence

import numpy as np

from lm.errors import MissingFile, UserError

FORMAT = "lm-token-shards/1"
META = "meta.json"
RETOKENIZE = "re-run experiments.tokenize_data"
# Opening a folder whose shards total at most this many bytes also checks their sha256 (~0.4 s at the
# ~600 MB/s measured here; the default pipeline's shards are ~1.5 MB: milliseconds). Larger folders
# are hashed once, at the end of experiments.tokenize_data, or by an explicit verify().
VERIFY_ON_OPEN_BYTES = 256 << 20


def tokenizer_fingerprint(path: str) -> str:
  """sha256 hex of a tokenizer file's bytes (what meta.json's "tokenizer_fingerprint" holds)."""
  return file_sha256(path)


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


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
    data = np.concatenate(self._buf).astype("<" + np.dtype(self.dtype).str[1:])
    data.tofile(tmp)
    os.replace(tmp, os.path.join(self.out_dir, name))
    # Hashed from the buffer just written (no re-read); verify() re-hashes the file.
    self.shards.append({"file": name, "num_tokens": self._buf_tokens, "num_docs": self._buf_docs,
                        "bytes": int(data.nbytes), "sha256": hashlib.sha256(memoryview(data)).hexdigest()})
    self._buf, self._buf_tokens, self._buf_docs = [], 0, 0

  def close(self) -> dict:
    self._flush()
    tok_file = getattr(self.tokenizer, "file_name", "tokenizer.json")
    tok_path = os.path.join(self.out_dir, tok_file)
    self.tokenizer.save(tok_path)
    meta = {
        "format": FORMAT,
        "dtype": np.dtype(self.dtype).name,
        "vocab_size": int(self.tokenizer.vocab_size),
        "bos_id": int(self.tokenizer.bos_id),
        "tokenizer": tok_file,
        "tokenizer_fingerprint": tokenizer_fingerprint(tok_path),
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


def check_sizes(shard_dir: str, meta: dict) -> None:
  """Each shard's size on disk must be meta's "bytes" (num_tokens × itemsize for older metas)."""
  itemsize = np.dtype(meta["dtype"]).itemsize
  for s in meta["shards"]:
    path = os.path.join(shard_dir, s["file"])
    expected = s.get("bytes", s["num_tokens"] * itemsize)
    if not os.path.exists(path):
      raise MissingFile(f"token shards: {path!r} is missing ({expected} bytes expected); {RETOKENIZE}")
    found = os.path.getsize(path)
    if found != expected:
      raise UserError(f"token shards: {path!r} has {found} bytes, meta.json says {expected} "
                      f"(truncated or overwritten); {RETOKENIZE}")


def verify(shard_dir: str, meta: dict | None = None) -> int:
  """Re-hashes every shard that has a "sha256" in meta.json; the first mismatch is a UserError.

  Returns the number of shards checked (0 for metas written before checksums existed).
  """
  meta = meta or read_meta(shard_dir)
  checked = 0
  for s in meta["shards"]:
    if "sha256" not in s:
      continue
    path = os.path.join(shard_dir, s["file"])
    if file_sha256(path) != s["sha256"]:
      raise UserError(f"token shards: {path!r} does not match its sha256 in meta.json (corrupted); {RETOKENIZE}")
    checked += 1
  return checked


class TokenShards:
  """Read-only view of a shard folder: memory-mapped arrays, one per shard.

  Opening checks every shard's size against meta.json, and their sha256 too when `verify` is True
  ("auto": when the shards total at most VERIFY_ON_OPEN_BYTES); `verify()` does it on demand.
  """

  def __init__(self, shard_dir: str, verify: bool | str = "auto"):
    self.dir = shard_dir
    self.meta = read_meta(shard_dir)
    self.vocab_size = self.meta["vocab_size"]
    self.bos_id = self.meta["bos_id"]
    check_sizes(shard_dir, self.meta)
    self.arrays = [
        np.memmap(os.path.join(shard_dir, s["file"]), dtype=self.meta["dtype"], mode="r")
        for s in self.meta["shards"]
    ]
    if verify is True or (verify == "auto" and sum(a.nbytes for a in self.arrays) <= VERIFY_ON_OPEN_BYTES):
      self.verify()

  def verify(self) -> int:
    """Every shard's sha256 against meta.json (UserError naming the first bad shard); returns shards checked."""
    return verify(self.dir, self.meta)

  @property
  def tokenizer_path(self) -> str:
    return os.path.join(self.dir, self.meta["tokenizer"])

  @property
  def tokenizer_fingerprint(self) -> str:
    """sha256 hex of the tokenizer file's bytes (from meta.json, else computed from the file)."""
    fp = self.meta.get("tokenizer_fingerprint")
    if fp is None:
      if not os.path.exists(self.tokenizer_path):
        raise MissingFile(f"token shards: tokenizer {self.tokenizer_path!r} is missing; {RETOKENIZE}")
      fp = self.meta["tokenizer_fingerprint"] = tokenizer_fingerprint(self.tokenizer_path)
    return fp

  @property
  def num_tokens(self) -> int:
    return self.meta["num_tokens"]


def check_vocab(expected: int, found: int, what: str) -> None:
  if expected != found:
    raise UserError(f"vocabulary mismatch: {what} has vocab_size {found}, expected {expected}")


def check_tokenizer_bytes(shard_dir: str, data: bytes, what: str) -> None:
  """The tokenizer file `data` (e.g. a checkpoint's saved tokenizer) must be the shards' own, byte for byte."""
  found = hashlib.sha256(data).hexdigest()
  expected = TokenShards(shard_dir, verify=False).tokenizer_fingerprint
  if found != expected:
    raise UserError(f"tokenizer mismatch: {what} was trained with a different tokenizer than token shards "
                    f"{shard_dir!r} (sha256 {found[:12]} vs {expected[:12]}); point --config.data.path at "
                    f"shards made with that tokenizer or start a new --workdir")


def copy_tokenizer(shard_dir: str, dest_dir: str) -> str:
  meta = read_meta(shard_dir)
  dest = os.path.join(dest_dir, meta["tokenizer"])
  shutil.copyfile(os.path.join(shard_dir, meta["tokenizer"]), dest)
  return dest
