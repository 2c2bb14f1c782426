"""Grain pipeline for the reward model: rankings → one row per response → microbatches of whole rankings.

Each response is rendered with its prompt as one conversation, in the project's
format (`lm/conversation.py`) or an imported model's chat template (`fmt`, as
in SFT), and laid out in a row of `seq_len` tokens, right-padded:

  inputs  int32[T]  the conversation's ids, `pad_id` after them
  mask    int32[T]  1 on its tokens (the score is read at the last one)
  group   int32     rows with the same id > 0 answer one prompt; 0 marks a padding row
  rank    int32     the response's rank in its group, 0 the best (equal: a tie)

A conversation longer than a row is cut: the row keeps its first token (the BOS)
and the *last* tokens of the prompt (the turns nearest the response), at least a
quarter of the row, and the response from its start; a response that still does
not fit loses its end. Both are counted in `stats` (prompts_cut, responses_cut).

The loss (lm.losses.ranking) pairs rows of a microbatch only, so a ranking must
never be split between microbatches or hosts. Rankings are therefore packed
whole, best-fit decreasing by size, into chunks of `rows_per_chunk` rows (a
microbatch's rows on one host), padding rows filling the rest. A host batch is
`chunks_per_batch` (= grad_accum) chunks interleaved so that lm.train's
microbatch split (every n-th row) gives each microbatch exactly one chunk per
host; group ids are unique over the global batch, so they never collide.
Packing is fixed by the seed; Grain shuffles the chunks every epoch and its
iterator state checkpoints with the run.
"""
from __future__ import annotations

import functools
from typing import Sequence

import grain
import jax
import numpy as np

from lm import conversation
from lm.data import pipeline
from lm.data.rankings import Ranking
from lm.data.sft import best_fit_decreasing
from lm.errors import UserError


def fit(ids_N: np.ndarray, response_start: int, seq_len: int) -> tuple[np.ndarray, bool, bool]:
  """A rendered conversation cut to `seq_len` tokens → (ids, prompt cut, response cut)."""
  if ids_N.size <= seq_len:
    return ids_N, False, False
  prompt, response = ids_N[:response_start], ids_N[response_start:]
  keep_prompt = min(prompt.size, max(seq_len - response.size, max(seq_len // 4, 1)))
  prompt_cut = keep_prompt < prompt.size
  if prompt_cut:  # the BOS, then the prompt's last keep_prompt − 1 tokens
    prompt = np.concatenate([prompt[:1], prompt[prompt.size - keep_prompt + 1:]])
  room = seq_len - prompt.size
  return np.concatenate([prompt, response[:room]]), prompt_cut, response.size > room


def _response_start(mask_N: np.ndarray) -> int:
  """Where the last assistant turn's learned tokens begin (what follows the prompt and its header)."""
  on = np.flatnonzero(mask_N)
  if on.size == 0:
    raise UserError("reward data: a rendered response has no assistant tokens")
  off = np.flatnonzero(mask_N[:on[-1]] == 0)
  return int(off[-1]) + 1 if off.size else 0


def render_row(prompt: Sequence[dict], response: str, tok, seq_len: int, fmt=None) -> tuple[np.ndarray, bool, bool]:
  """One response with its prompt, rendered as one conversation and fitted to `seq_len` tokens →
  (ids, prompt cut, response cut). The reward model reads exactly this in training and when it
  scores RL rollouts (lm/reward_model.Scorer)."""
  messages = [*prompt, {"role": "assistant", "content": response}]
  rendered = conversation.render(messages, tok) if fmt is None else fmt.render(messages)
  return fit(rendered.ids_T.astype(np.int32), _response_start(rendered.mask_T), seq_len)


class RankedRows:
  """Every response of every ranking rendered once and fitted to `seq_len`, then packed into chunks."""

  def __init__(self, rankings: Sequence[Ranking], tok, seq_len: int, rows_per_chunk: int, *, fmt=None,
               seed: int = 0):
    if not rankings:
      raise UserError("reward data: no rankings; check config.data.kind and config.data.path")
    biggest = max(len(r.responses) for r in rankings)
    if biggest > rows_per_chunk:
      raise UserError(f"config.train.batch_size: a microbatch holds {rows_per_chunk} rows per host, but a "
                      f"ranking has {biggest} responses; raise batch_size (or lower grad_accum) so that "
                      f"batch_size / grad_accum / hosts ≥ {biggest}")
    self.seq_len, self.rows_per_chunk, self.pad_id = seq_len, rows_per_chunk, tok.pad_id
    self.rankings = list(rankings)
    self.ids: list[np.ndarray] = []      # per response, in ranking order
    self.first: list[int] = []           # per ranking, the index of its first response
    cut_p = cut_r = 0
    for g, r in enumerate(self.rankings):
      self.first.append(len(self.ids))
      for text in r.responses:
        try:
          ids, p, q = render_row(r.prompt, text, tok, seq_len, fmt)
        except UserError as e:
          raise UserError(f"reward data, ranking {g}: {e}") from None
        self.ids.append(ids)
        cut_p, cut_r = cut_p + p, cut_r + q
    sizes = np.asarray([len(r.responses) for r in self.rankings], np.int64)
    self.chunks = best_fit_decreasing(sizes, rows_per_chunk, seed)
    lengths = np.asarray([a.size for a in self.ids])
    pairs = sum(len(r.pairs()) for r in self.rankings)
    self.stats = {
        "rankings": len(self.rankings), "responses": int(sizes.sum()), "pairs": pairs,
        "chunks": len(self.chunks), "padding_rows": len(self.chunks) * rows_per_chunk - int(sizes.sum()),
        "mean_tokens": float(lengths.mean()), "prompts_cut": cut_p, "responses_cut": cut_r,
        # Chance levels: a random scorer orders half the pairs right, and a best-ranked reply with w
        # replies ranked below it scores highest 1/(w+1) of the time (1/k without ties).
        "top1_chance": float(np.mean([1 / (1 + sum(x > 0 for x in r.ranks))
                                      for r in self.rankings for x in r.ranks if x == 0 and max(r.ranks)]
                                     or [np.nan])),
    }

  def chunk(self, index: int | None) -> dict:
    """Chunk `index` as arrays: inputs, mask (rows, T), group, rank (rows,); None: all padding."""
    m, T = self.rows_per_chunk, self.seq_len
    out = {"inputs": np.full((m, T), self.pad_id, np.int32), "mask": np.zeros((m, T), np.int32),
           "group": np.zeros((m,), np.int32), "rank": np.zeros((m,), np.int32)}
    row = 0
    for g_local, g in enumerate([] if index is None else self.chunks[index], 1):
      for k, rank in enumerate(self.rankings[g].ranks):
        ids = self.ids[self.first[g] + k]
        out["inputs"][row, :ids.size] = ids
        out["mask"][row, :ids.size] = 1
        out["group"][row] = g_local
        out["rank"][row] = rank
        row += 1
    return out

  def rows_of(self, index: int) -> list[tuple[int, int]]:
    """(ranking, response) of each real row of chunk `index`, in row order."""
    return [(g, k) for g in self.chunks[index] for k in range(len(self.rankings[g].responses))]


class _Chunks(grain.sources.RandomAccessDataSource):
  def __init__(self, rows: RankedRows, n: int):
    self.rows, self.n = rows, n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, index: int) -> dict:
    # Indices past the packed chunks (rounding up to the hosts) are all-padding chunks.
    return self.rows.chunk(index if index < len(self.rows.chunks) else None)

  def __repr__(self) -> str:
    return f"RankedChunks(chunks={len(self.rows.chunks)}, rows={self.rows.rows_per_chunk})"


def _interleave(batch: dict, first_chunk: int, rows_per_chunk: int) -> dict:
  """(n chunks, rows, ...) → (rows·n, ...) with chunk j on rows j, j+n, …: lm.train's microbatch j.

  Group ids are made unique over the whole global batch (chunk j of host p counts as chunk
  p·n + j), so the batch is also right for any split that keeps chunks whole (grad_accum 1).
  """
  n = batch["group"].shape[0]
  offset_n1 = (first_chunk + np.arange(n, dtype=np.int32))[:, None] * rows_per_chunk
  batch = dict(batch, group=np.where(batch["group"] > 0, batch["group"] + offset_n1, 0).astype(np.int32))
  return {k: np.ascontiguousarray(x.swapaxes(0, 1).reshape(-1, *x.shape[2:])) for k, x in batch.items()}


def num_batches(rows: RankedRows, process_count: int | None = None) -> int:
  """Host batches of one chunk that cover every chunk once on every host (evaluation)."""
  process_count = jax.process_count() if process_count is None else process_count
  return -(-len(rows.chunks) // process_count)


def dataset(rows: RankedRows, chunks_per_batch: int, *, seed: int, shuffle: bool = True, repeat: bool = True,
            process_index: int | None = None, process_count: int | None = None,
            prefetch_threads: int = 2) -> grain.IterDataset:
  """The host's stream of batches: `chunks_per_batch` chunks interleaved, `rows_per_chunk` × that rows.

  Without `repeat`, every chunk is read once (the chunk count rounded up to the hosts with
  all-padding chunks), one chunk per batch: the held-out pass.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  n = len(rows.chunks) if repeat else num_batches(rows, process_count) * process_count
  ds = pipeline.host_batches(_Chunks(rows, n), chunks_per_batch, seed=seed, shuffle=shuffle, repeat=repeat,
                             process_index=process_index, process_count=process_count,
                             prefetch_threads=prefetch_threads)
  return ds.map(functools.partial(_interleave, first_chunk=process_index * chunks_per_batch,
                                  rows_per_chunk=rows.rows_per_chunk))
