"""Grain pipeline for SFT: conversations → rendered once → fixed-length rows → host batches.

Each conversation is rendered once into one flat token array, in the project's
format (`lm/conversation.py`) or, given `fmt`, an imported model's own chat
template (`lm/chat_template.py`: the same ids + assistant-mask contract); rows
of `seq_len + 1` tokens are then laid out in one of two modes:

  pack  BOS-aligned best-fit decreasing: whole conversations, longest first,
        each into the row with the least room left that still fits it, so a
        conversation is never split across rows. One longer than a row is cut
        to the row (counted in `stats["truncated"]`).
  pad   one conversation per row (cut the same way), padded.

A row yields the same keys as pretraining rows (`lm/data/packed.py`), so
`lm.losses.next_token` trains on it unchanged:
  inputs, targets   the row shifted by one                  int32[T]
  loss_mask         1 where the target is an assistant token float32[T]
  positions         position inside its conversation         int32[T]
  segment_ids       1, 2, … per conversation, 0 on padding   int32[T]
Padding is `pad_id` with loss_mask 0, segment 0 and position 0.

Packing is a deterministic function of the seed (it only breaks ties between
equal lengths); row order is shuffled by Grain, re-shuffled every epoch, split
across hosts by slicing, and the iterator state checkpoints with the run.
"""
from __future__ import annotations

import bisect
from typing import Iterable, Sequence

import grain
import jax
import numpy as np

from lm import conversation
from lm.data import pipeline
from lm.errors import UserError

MODES = ("pack", "pad")


class RenderedSet:
  """Every conversation rendered once: flat ids/mask plus per-conversation offsets."""

  def __init__(self, conversations: Iterable[Sequence[dict]], tok, fmt=None):
    """`fmt`: a format from `lm.chat_template.chat_format` (None: the project's own)."""
    ids, masks = [], []
    for i, conv in enumerate(conversations):
      try:
        r = conversation.render(conv, tok) if fmt is None else fmt.render(conv)
      except UserError as e:
        raise UserError(f"sft data, item {i} of the mixed sources: {e}") from None
      ids.append(r.ids_T)
      masks.append(r.mask_T)
    if not ids:
      raise UserError("sft data: no conversations; check the data sources and their paths")
    self.lengths_N = np.asarray([a.size for a in ids], np.int64)
    self.starts_N = np.concatenate([[0], np.cumsum(self.lengths_N)[:-1]])
    self.ids = np.concatenate(ids).astype(np.int32)
    self.mask = np.concatenate(masks).astype(np.int8)
    self.pad_id = tok.pad_id

  def __len__(self) -> int:
    return self.lengths_N.size


def best_fit_decreasing(lengths_N: np.ndarray, capacity: int, seed: int) -> list[list[int]]:
  """Bins (lists of item indices) of total length ≤ capacity; items must fit one bin each."""
  rng = np.random.default_rng(seed)
  # Seeded order among equal lengths, then longest first (stable sort keeps the tie order).
  perm = rng.permutation(lengths_N.size)
  order = perm[np.argsort(-lengths_N[perm], kind="stable")]
  bins: list[list[int]] = []
  room: list[tuple[int, int]] = []  # sorted (room left, bin index) of bins with room
  for i in order:
    n = int(lengths_N[i])
    k = bisect.bisect_left(room, (n, -1))
    if k == len(room):
      bins.append([int(i)])
      b, left = len(bins) - 1, capacity - n
    else:
      left, b = room.pop(k)
      bins[b].append(int(i))
      left -= n
    if left > 0:
      bisect.insort(room, (left, b))
  return bins


class SFTRows(grain.sources.RandomAccessDataSource):
  """Random access to SFT rows (dicts of [seq_len] arrays); `stats` describes the layout."""

  def __init__(self, rendered: RenderedSet, seq_len: int, mode: str = "pack", seed: int = 0):
    if mode not in MODES:
      raise UserError(f"sft data: unknown mode {mode!r}; use one of {MODES}")
    self.r = rendered
    self.seq_len = seq_len
    row_len = seq_len + 1
    self.used_N = np.minimum(rendered.lengths_N, row_len)
    if mode == "pack":
      self.rows = best_fit_decreasing(self.used_N, row_len, seed)
    else:
      self.rows = [[i] for i in range(len(rendered))]
    tokens = int(self.used_N.sum())
    cut = rendered.lengths_N > row_len
    learned = sum(int(rendered.mask[s:s + n].sum())
                  for s, n in zip(rendered.starts_N, self.used_N))
    self.stats = {
        "mode": mode, "conversations": len(rendered), "rows": len(self.rows), "tokens": tokens,
        "padding_fraction": 1.0 - tokens / (len(self.rows) * row_len),
        "truncated": int(cut.sum()),
        "truncated_tokens": int((rendered.lengths_N - self.used_N).sum()),
        "loss_fraction": learned / (len(self.rows) * row_len),
    }

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, index: int) -> dict:
    row_len = self.seq_len + 1
    ids_L = np.full(row_len, self.r.pad_id, np.int32)
    mask_L = np.zeros(row_len, np.float32)
    seg_L = np.zeros(row_len, np.int32)
    pos_L = np.zeros(row_len, np.int32)
    at = 0
    for k, i in enumerate(self.rows[index], 1):
      s, n = int(self.r.starts_N[i]), int(self.used_N[i])
      ids_L[at:at + n] = self.r.ids[s:s + n]
      mask_L[at:at + n] = self.r.mask[s:s + n]
      seg_L[at:at + n] = k
      pos_L[at:at + n] = np.arange(n)
      at += n
    # The mask marks tokens to predict, so it moves with the targets.
    return {"inputs": ids_L[:-1], "targets": ids_L[1:], "loss_mask": mask_L[1:],
            "positions": pos_L[:-1], "segment_ids": seg_L[:-1]}

  def __repr__(self) -> str:
    return f"SFTRows({self.stats['mode']}, seq_len={self.seq_len}, rows={len(self)})"


def dataset(rows: SFTRows, host_batch: int, *, seed: int, shuffle: bool = True, repeat: bool = True,
            process_index: int | None = None, process_count: int | None = None,
            prefetch_threads: int = 2) -> grain.IterDataset:
  """The host's stream of batches (dicts of [host_batch, seq_len] arrays), checkpointable."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if len(rows) < host_batch * process_count and not repeat:
    raise UserError(f"sft data: {len(rows)} rows, fewer than one batch of {host_batch} per host "
                     f"on {process_count} hosts; lower the batch size or add data")
  return pipeline.host_batches(rows, host_batch, seed=seed, shuffle=shuffle, repeat=repeat,
                               process_index=process_index, process_count=process_count,
                               prefetch_threads=prefetch_threads)
