"""Probes of what a trained model can do that its loss does not show.

  probes.copy_gain(model, params, vocab_size)  → {"first": 7.9, "second": 0.4, "gain": 7.5}

In-context copying (the "induction heads" of Olsson et al., 2022): a random
token sequence is shown twice in a row; a model that can copy from its context
predicts the second copy far better than the first (gain of several nats), one
that cannot gains nothing. Tool use needs it: a letter-counting call
`print("airport".count("r"))` must copy the asked word's pieces out of the
prompt, and an answer read off a search result must copy the fact. A model
that sees its small corpus dozens of times can fit it without ever copying
(names built from a few known parts are recalled, not copied), so the
pretraining report logs this beside the held-out loss.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lm import sharding


def copy_gain(model, params, vocab_size: int, *, mesh=None, rows: int = 8, length: int = 48, seed: int = 0,
              first_id: int = 32) -> dict[str, float]:
  """Mean next-token loss (nats) over a random sequence's first and second copy, and their difference.

  Token ids are drawn from [first_id, vocab_size) (below it sit the special tokens); the first
  position of each copy is left out (nothing predicts it)."""
  if vocab_size <= first_id + length:
    raise ValueError(f"copy_gain: vocabulary of {vocab_size} is too small for {length} distinct tokens")
  if mesh is not None:  # rows split over the batch axes: a multiple of their size
    split = int(np.prod([mesh.shape[a] for a in sharding.BATCH_AXES]))
    rows = -(-rows // split) * split
  rng = np.random.default_rng(seed)
  seq = np.stack([rng.choice(np.arange(first_id, vocab_size), length, replace=False) for _ in range(rows)])
  tokens = np.concatenate([seq, seq], 1).astype(np.int32)
  # On a mesh every process passes the whole batch (the same rows on all: same seed); each device takes its rows.
  tokens = (sharding.same_batch_to_global({"t": tokens}, mesh)["t"] if mesh is not None else jnp.asarray(tokens))
  first, second = (float(v) for v in jax.device_get(_copy_losses(model, params, tokens, length)))
  return {"first": first, "second": second, "gain": first - second}


@functools.partial(jax.jit, static_argnames=("model", "length"))
def _copy_losses(model, params, tokens_BT, length):
  logits_BTV = model.apply({"params": params}, tokens_BT).astype(jnp.float32)
  logp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1], -1)
  nll_BT = -jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], -1)[..., 0]  # loss of token t + 1
  return nll_BT[:, :length - 1].mean(), nll_BT[:, length:].mean()
