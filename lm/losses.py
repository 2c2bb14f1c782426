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


AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def grpo(model: nn.Module, *, clip_low: float, clip_high: float, kl_coef: float, aggregation: str,
         max_new_tokens: int):
  """The GRPO objective (a PPO-style clipped surrogate with group-relative advantages).

  The batch has inputs, targets, positions, segment_ids, loss_mask (1 on the completion's sampled
  tokens only: prompt, padding and forced tool-output tokens are 0), advantages (B,),
  old_logprobs (B, T) (the rollout policy's, recomputed with the training forward; absent for
  on-policy K=1 updates, where π_old is the current policy: ratio = exp(logp − stop_grad(logp)) = 1
  with the REINFORCE gradient, and the forward pass that would recompute it is saved) and, when
  kl_coef > 0, ref_logprobs (B, T). Per token, with ratio r = π/π_old:

      l = −min(r·A, clip(r, 1 − clip_low, 1 + clip_high)·A) + kl_coef · k3        (k3 estimates KL(π ‖ π_ref))
      k3 = exp(ref − logp) − (ref − logp) − 1              (unbiased, always ≥ 0)

  `aggregation` says what the loss is a mean over, through the step's weight:
    token_mean     every completion token of the batch counts once (long answers weigh more)
    sequence_mean  each completion's token mean, then the mean over completions (GRPO's paper)
    constant       each completion's token sum / max_new_tokens, mean over completions (Dr. GRPO:
                   no 1/length factor, so wrong answers are not pushed to grow longer)
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation {aggregation!r} is not one of {AGGREGATIONS}")

  def loss_fn(params, batch, rng):
    del rng
    logits_BTV = _logits(model, params, batch).astype(jnp.float32)
    # The same expression as `token_logprobs` (old and reference log-probs), so that on-policy
    # ratios are 1 up to the last bit of rounding.
    logp_BT = -optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
    logz_BT = jax.nn.logsumexp(logits_BTV, -1)
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    adv_B1 = batch["advantages"].astype(jnp.float32)[:, None]
    old_BT = batch["old_logprobs"] if "old_logprobs" in batch else jax.lax.stop_gradient(logp_BT)
    ratio_BT = jnp.exp(logp_BT - old_BT)
    clipped_BT = jnp.clip(ratio_BT, 1.0 - clip_low, 1.0 + clip_high)
    per_token_BT = -jnp.minimum(ratio_BT * adv_B1, clipped_BT * adv_B1)
    kl_BT = None
    if "ref_logprobs" in batch:  # measured whenever the reference is there, in the loss when kl_coef > 0
      d_BT = jnp.where(mask_BT > 0, batch["ref_logprobs"] - logp_BT, 0.0)  # masked: exp(−logp) could overflow
      kl_BT = jnp.exp(d_BT) - d_BT - 1.0
      if kl_coef > 0:
        per_token_BT = per_token_BT + kl_coef * kl_BT
    elif kl_coef > 0:
      raise ValueError("grpo loss: kl_coef > 0 needs ref_logprobs in the batch")
    n_B = mask_BT.sum(-1)
    token_sum_B = (per_token_BT * mask_BT).sum(-1)
    rows = (n_B > 0).astype(jnp.float32)
    if aggregation == "token_mean":
      loss, weight = token_sum_B.sum(), n_B.sum()
    elif aggregation == "sequence_mean":
      loss, weight = (token_sum_B / jnp.maximum(n_B, 1.0)).sum(), rows.sum()
    else:
      loss, weight = token_sum_B.sum() / max_new_tokens, rows.sum()
    probs_BTV = jax.nn.softmax(logits_BTV, -1)
    entropy_BT = logz_BT - (probs_BTV * logits_BTV).sum(-1)
    outside_BT = ((ratio_BT < 1.0 - clip_low) & (adv_B1 < 0)) | ((ratio_BT > 1.0 + clip_high) & (adv_B1 > 0))
    tokens = mask_BT.sum()
    aux = {"weight": weight,
           "entropy": (entropy_BT * mask_BT).sum(), "entropy/weight": tokens,
           "clip_fraction": (outside_BT * mask_BT).sum(), "clip_fraction/weight": tokens,
           "ratio": (ratio_BT * mask_BT).sum(), "ratio/weight": tokens}
    if kl_BT is not None:  # absent, not a fake 0, when no reference log-probs came in
      aux.update({"kl": (kl_BT * mask_BT).sum(), "kl/weight": tokens})
    return loss, aux
  return loss_fn


# ---------------------------------------------------------------- reward model (model.head='score')

def last_token_scores(model: nn.Module, params, inputs_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
  """Each row's score at its last real token (mask 1), left- or right-padded alike.

  Positions count real tokens only and padding is its own attention segment, so
  the score of a row does not depend on how much padding it has or on which side.
  """
  mask_BT = mask_BT.astype(jnp.int32)
  positions_BT = jnp.maximum(jnp.cumsum(mask_BT, axis=1) - 1, 0)
  scores_BT = model.apply({"params": params}, inputs_BT, positions_BT, mask_BT)
  t_T = jnp.arange(inputs_BT.shape[1], dtype=jnp.int32)
  last_B = jnp.argmax(mask_BT * (t_T + 1), axis=1)  # the rightmost real token (0 for an empty row)
  return jnp.take_along_axis(scores_BT, last_B[:, None], axis=1)[:, 0]


def ranking_pairs(group_B: jax.Array, rank_B: jax.Array) -> jax.Array:
  """better_BB[i, j]: rows i and j answer the same prompt (group > 0) and i is ranked above j
  (a smaller rank). Equal ranks (ties) make no pair; group 0 is padding."""
  same_BB = (group_B[:, None] == group_B[None, :]) & (group_B > 0)[:, None]
  return same_BB & (rank_B[:, None] < rank_B[None, :])


def ranking_terms(scores_B: jax.Array, group_B: jax.Array, rank_B: jax.Array):
  """Bradley–Terry over every pair of every ranking in the batch → (loss sum, aux sums).

  loss = Σ_{i ranked above j} −log σ(s_i − s_j); aux["weight"] = the number of pairs, so a k-way
  ranking without ties weighs k(k−1)/2. "accuracy" counts pairs ordered right (s_i > s_j),
  "margin" sums s_i − s_j, and "top1" counts best-ranked rows (rank 0) that score above every
  reply ranked below them, over "top1/weight" such rows.
  """
  better_BB = ranking_pairs(group_B, rank_B).astype(jnp.float32)
  margin_BB = scores_B[:, None] - scores_B[None, :]
  wrong_B = (better_BB * (margin_BB <= 0)).sum(1)
  top_B = ((rank_B == 0) & (better_BB.sum(1) > 0)).astype(jnp.float32)
  aux = {"weight": better_BB.sum(),
         "accuracy": (better_BB * (margin_BB > 0)).sum(),
         "margin": (better_BB * margin_BB).sum(),
         "top1": (top_B * (wrong_B == 0)).sum(), "top1/weight": top_B.sum()}
  return (better_BB * jax.nn.softplus(-margin_BB)).sum(), aux


def ranking(model: nn.Module):
  """Reward-model loss: one forward pass per response, pairs built inside the batch.

  The batch has inputs, mask (B, T) (1 on each row's tokens) and group, rank (B,): rows with
  the same group id > 0 answer one prompt, rank 0 is the best (equal ranks: a tie), group 0 is
  a padding row. Pairs only form within a batch, so a data pipeline keeps each ranking in one
  microbatch (lm/data/ranking_rows.py); the (B, B) pair masks are tiny next to the forward pass,
  which stays sharded over the batch axes.
  """
  def loss_fn(params, batch, rng):
    del rng
    scores_B = last_token_scores(model, params, batch["inputs"], batch["mask"])
    return ranking_terms(scores_B, batch["group"], batch["rank"])
  return loss_fn


def scores(model: nn.Module):
  """Forward function for `train.make_forward_step`: {"scores": (B,)}, one per row (reward model)."""
  def forward_fn(params, batch):
    return {"scores": last_token_scores(model, params, batch["inputs"], batch["mask"])}
  return forward_fn
