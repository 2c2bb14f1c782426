"""Tokenizers: one small interface, a byte-level tokenizer, and loading by name.

Every tokenizer has the same surface: `encode(text) -> list[int]`,
`decode(ids) -> str`, `vocab_size`, and ids for the special tokens
(`bos_id`, `eos_id`, `pad_id`, plus `special_ids` by name). A tokenizer is saved
next to token shards and inside every checkpoint as one file, so that a run can
always be decoded and a vocabulary mismatch is caught (`save` / `load_tokenizer`).
"""
from __future__ import annotations

import json
import os
from typing import Protocol, Sequence

SPECIAL_TOKENS = (
    "<|bos|>", "<|eos|>", "<|pad|>",
    "<|im_start|>", "<|im_sep|>", "<|im_end|>",
    "<|python_start|>", "<|python_end|>",
    "<|output_start|>", "<|output_end|>",
    "<|search_start|>", "<|search_end|>",
)


class Tokenizer(Protocol):
  vocab_size: int
  bos_id: int
  eos_id: int
  pad_id: int
  special_ids: dict[str, int]

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def save(self, path: str) -> None: ...


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then the special tokens; lossless on any text.

  Special tokens are ids ≥ 256, which no byte can produce, so they are atomic.
  `encode` never emits them from text: a literal "<|bos|>" in a document stays
  eight bytes.
  """

  kind = "byte"

  def __init__(self):
    self.special_ids = {t: 256 + i for i, t in enumerate(SPECIAL_TOKENS)}
    self.vocab_size = 256 + len(SPECIAL_TOKENS)
    self.bos_id = self.special_ids["<|bos|>"]
    self.eos_id = self.special_ids["<|eos|>"]
    self.pad_id = self.special_ids["<|pad|>"]

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    inverse = {v: k for k, v in self.special_ids.items()}
    out, buf = [], bytearray()
    for i in ids:
      i = int(i)
      if i < 256:
        buf.append(i)
        continue
      out.append(buf.decode("utf-8", errors="replace"))
      buf = bytearray()
      out.append(inverse.get(i, ""))
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"kind": "byte", "vocab_size": self.vocab_size}, f)


TOKENIZER_FILE = "tokenizer.json"


def load_tokenizer(spec: str) -> Tokenizer:
  """`spec` is 'byte' or a path to a saved tokenizer file (or a folder holding one)."""
  if spec == "byte":
    return ByteTokenizer()
  path = os.path.join(spec, TOKENIZER_FILE) if os.path.isdir(spec) else spec
  if not os.path.exists(path):
    raise FileNotFoundError(f"tokenizer: no such file {path!r} (use 'byte' or a saved tokenizer)")
  if path.endswith(".json"):
    with open(path) as f:
      meta = json.load(f)
    if meta.get("kind") == "byte":
      return ByteTokenizer()
    raise ValueError(f"tokenizer: {path!r} has unknown kind {meta.get('kind')!r}")
  raise ValueError(f"tokenizer: cannot read {path!r}: expected a tokenizer .json or .model file")
