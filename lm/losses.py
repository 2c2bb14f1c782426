"""Loss functions for `lm.train.make_train_step` (see its contract: sums + aux["weight"]).

Each is a factory taking the model, so the step stays generic: a new objective
is a new function here, not an `if` in the step.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def token_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array):
  """Summed masked cross-entropy and the number of tokens whose target has the top logit."""
  ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
  mask_BT = mask_BT.astype(jnp.float32)
  # "Target has the top logit" rather than argmax == target: a max reduce that
  # XLA shares with log_softmax's instead of a separate variadic argmax pass
  # over (B, T, V). Differs from argmax only on exact ties.
  target_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], -1)[..., 0]
  correct_BT = (target_BT >= logits_BTV.max(-1)).astype(jnp.float32)
  return (ce_BT * mask_BT).sum(), (correct_BT * mask_BT).sum(), mask_BT.sum()


def _logits(model: nn.Module, params, batch: dict) -> jax.Array:
  return model.apply({"params": params}, batch["inputs"], batch.get("positions"), batch.get("segment_ids"))


def next_token(model: nn.Module):
  """Pretraining and SFT loss (SFT: loss_mask is 1 on assistant tokens only).

  The batch has inputs, targets, loss_mask (+ positions, segment_ids for packed rows).
  """
  def loss_fn(params, batch, rng):
    del rng
    logits_BTV = _logits(model, params, batch)
    loss, correct, weight = token_cross_entropy(logits_BTV, batch["targets"], batch["loss_mask"])
    return loss, {"weight": weight, "accuracy": correct}
  return loss_fn


def token_logprobs(model: nn.Module):
  """Forward function for `train.make_forward_step`: log p(target) per token, (B, T), masked to 0.

  GRPO's old and reference log-probs and evaluation's per-example losses use it;
  the train step's loss and this share one forward, so they agree exactly.
  """
  def forward_fn(params, batch):
    logits_BTV = _logits(model, params, batch)
    logp_BT = -optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    return {"logprobs": logp_BT * mask_BT, "tokens": mask_BT.sum(-1)}
  return forward_fn
