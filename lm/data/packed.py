"""Grain pipeline for pretraining: token shards → packed fixed-length rows → host batches.

Rows are windows of `seq_len + 1` tokens over each shard's stream of documents
(every document starts with BOS, so boundaries survive packing). A row yields
  inputs, targets   the window shifted by one            int32[T]
  loss_mask         1 everywhere (pad-free packing)      float32[T]
  positions         position inside the current document int32[T]
  segment_ids       document index inside the row        int32[T]
(`positions`/`segment_ids` are only emitted with `document_mask=True`, which
makes attention stay within a document.)

Order is a deterministic function of (seed, epoch, step): shuffled with Grain,
re-shuffled every epoch, split across hosts by slicing, and the iterator's
state is saved in every checkpoint, so a resumed run sees the same batches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import grain
import jax
import numpy as np
from tqdm import tqdm

from lm.errors import MissingFile, UserError
from lm.data import corpus, pipeline
from lm.data.shards import TokenShards, read_meta, write_shards


class PackedRows(grain.sources.RandomAccessDataSource):
  """Random access to non-overlapping (seq_len + 1)-token windows of a shard folder."""

  def __init__(self, shard_dir: str, seq_len: int):
    self.shards = TokenShards(shard_dir)
    self.seq_len = seq_len
    self.rows_per_shard = [max((a.size - 1) // seq_len, 0) for a in self.shards.arrays]
    self.offsets = np.cumsum([0] + self.rows_per_shard)
    if self.offsets[-1] == 0:
      raise UserError(f"token shards {shard_dir!r}: {self.shards.num_tokens} tokens, fewer than "
                       f"one row of seq_len+1={seq_len + 1}; lower config.train.seq_len or add data")

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __getitem__(self, index: int) -> np.ndarray:
    shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
    start = (index - self.offsets[shard]) * self.seq_len
    return np.asarray(self.shards.arrays[shard][start:start + self.seq_len + 1], np.int32)

  def __repr__(self) -> str:
    return f"PackedRows({self.shards.dir!r}, seq_len={self.seq_len})"


@dataclasses.dataclass(frozen=True)
class MakeExample(grain.transforms.Map):
  bos_id: int
  document_mask: bool

  def map(self, row: np.ndarray) -> dict:
    inputs, targets = row[:-1], row[1:]
    ex = {"inputs": inputs, "targets": targets, "loss_mask": np.ones(inputs.shape, np.float32)}
    if self.document_mask:
      seg = np.cumsum(inputs == self.bos_id).astype(np.int32)
      starts = np.maximum.accumulate(np.where(inputs == self.bos_id, np.arange(inputs.size), 0))
      ex["segment_ids"] = seg
      ex["positions"] = (np.arange(inputs.size) - starts).astype(np.int32)
    return ex


def dataset(shard_dir: str, seq_len: int, host_batch: int, *, seed: int, shuffle: bool,
            repeat: bool, document_mask: bool, process_index: int | None = None,
            process_count: int | None = None, prefetch_threads: int = 2) -> grain.IterDataset:
  """The host's stream of batches (dicts of [host_batch, seq_len] arrays)."""
  source = PackedRows(shard_dir, seq_len)
  return pipeline.host_batches(source, host_batch, seed=seed, shuffle=shuffle, repeat=repeat,
                               transform=MakeExample(source.shards.bos_id, document_mask),
                               process_index=process_index, process_count=process_count,
                               prefetch_threads=prefetch_threads)


def _fingerprint(path: str, tokenizer_kind: str, vocab: int, val_fraction: float) -> str:
  """Changes when the source text, tokenizer or split would: names the cached shards."""
  h = hashlib.sha1(f"{path}|{tokenizer_kind}|{vocab}|{val_fraction}".encode())
  if path != "default":
    for root, _, files in sorted(os.walk(path)) if os.path.isdir(path) else [("", [], [path])]:
      for f in sorted(files):
        st = os.stat(os.path.join(root, f))
        h.update(f"{f}{st.st_size}{st.st_mtime_ns}".encode())
  return h.hexdigest()[:12]


def prepare(data_cfg, tokenizer, cache_dir: str) -> tuple[str, str]:
  """Resolve `data.path` to (train, val) shard folders, tokenizing raw text if needed.

  A folder with train/meta.json and val/meta.json is used as is (the output of
  experiments.prepare_data). Text (the embedded default, .txt, .jsonl,
  .parquet) is split by document hash and tokenized once into `cache_dir`.
  Only process 0 writes; the others wait at a barrier.
  """
  path = data_cfg.path
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "train", "meta.json")):
    return os.path.join(path, "train"), os.path.join(path, "val")
  if path != "default" and not os.path.exists(path):
    raise MissingFile(f"config.data.path: no such file or folder {path!r}")
  kind = getattr(tokenizer, "kind", type(tokenizer).__name__)
  out = os.path.join(cache_dir, _fingerprint(path, kind, tokenizer.vocab_size, data_cfg.val_fraction))
  train_dir, val_dir = os.path.join(out, "train"), os.path.join(out, "val")
  if jax.process_index() == 0 and not os.path.exists(os.path.join(val_dir, "meta.json")):
    docs = corpus.documents(path, data_cfg.text_field)
    train, val = corpus.split(docs, data_cfg.val_fraction)
    if not train or not val:
      raise UserError(f"config.data.path: {path!r} gave {len(train)} train / {len(val)} held-out "
                       f"documents; need both (adjust config.data.val_fraction)")
    for name, docs_, d in (("train", train, train_dir), ("val", val, val_dir)):
      encoded = (tokenizer.encode(t) for t in tqdm(docs_, desc=f"tokenize {name}", unit="doc", leave=False))
      write_shards(encoded, tokenizer, d)
    with open(os.path.join(out, "source.json"), "w") as f:
      json.dump({"path": os.path.abspath(path) if path != "default" else path,
                 "val_fraction": data_cfg.val_fraction}, f)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("lm.data.prepare")
  return train_dir, val_dir


def bytes_per_token(shard_dir: str, tokenizer, sample_tokens: int = 200_000) -> float:
  """UTF-8 bytes per token on a prefix of the shards (for bits-per-byte)."""
  arr = TokenShards(shard_dir).arrays[0][:sample_tokens]
  ids = arr[arr != tokenizer.bos_id]
  return len(tokenizer.decode(ids.tolist()).encode("utf-8")) / max(ids.size, 1)


def vocab_of(shard_dir: str) -> int:
  return read_meta(shard_dir)["vocab_size"]
