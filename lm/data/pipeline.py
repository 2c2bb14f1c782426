"""The Grain tail every training input shares: rows → shuffled, repeated, this host's slice, batched.

A row source (`grain.sources.RandomAccessDataSource`: packed text rows, SFT rows,
...) becomes the host's iterator of batches. Shuffling is by a seed and
re-mixed each epoch; each host reads every process_count-th row from its
process index, so hosts never overlap; the iterator's state goes into every
checkpoint (`lm/checkpoint.py`), so a resumed run reads exactly what it would have.
"""
from __future__ import annotations

import grain
import jax


def host_batches(source, host_batch: int, *, seed: int, shuffle: bool, repeat: bool, transform=None,
                 process_index: int | None = None, process_count: int | None = None,
                 prefetch_threads: int = 2) -> grain.IterDataset:
  """The host's stream of batches (dicts of [host_batch, ...] arrays)."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if repeat:
    ds = ds.repeat(None)
  ds = ds[process_index::process_count]
  if transform is not None:
    ds = ds.map(transform)
  ds = ds.batch(host_batch, drop_remainder=True)
  read = grain.ReadOptions(num_threads=prefetch_threads, prefetch_buffer_size=4)
  return ds.to_iter_dataset(read_options=read)
