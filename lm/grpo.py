"""GRPO's pieces between the rollout engine and the train step: groups, advantages, training rows.

One GRPO iteration (experiments/grpo.py drives it through the shared loop):

  prompts (B) ──engine, G samples each, one prefill per prompt──▶ completions (B·G)
    ──reward(text, example)──▶ rewards (B, G) ──group_advantages──▶ advantages (B·G,)
    ──training_rows──▶ fixed-shape rows (prompt left-padded, completion, right padding)
    ──forward step (policy now, reference)──▶ old_logprobs (K > 1), ref_logprobs (KL in the loss)
    ──K × train step (losses.grpo)──▶ new parameters

With K = 1 the old policy is the current one, so the loss takes π_old = stop_grad(π) and no
forward pass is spent recomputing it; with a KL coefficient of 0 the reference is not run per
iteration (the KL is measured at evaluation instead, experiments/grpo.py).

`Rollouts` does everything up to the train step. The reward is a function of
(completion text, example), or, for RLHF, `batch_reward(texts, examples)` scoring
the whole batch at once: a reward model's forward on the mesh
(lm/reward_model.Scorer) where GRPO has a verifier. Every shape is fixed by the config (B·G rows of `seq_len` tokens,
prompts padded to a multiple of 32 in the engine): new parameters never
recompile anything.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from lm import conversation, engine, sharding


def forward_keys(rl) -> dict[str, bool]:
  """Which per-token log-probs a GRPO batch carries for config block `rl` (rollouts and AOT agree):
  the old policy's only for K > 1 passes, the reference's only when the KL is in the loss."""
  return {"old_logprobs": rl.passes > 1, "ref_logprobs": rl.kl_coef > 0}


def group_advantages(rewards_BG: np.ndarray, scale_by_std: bool, eps: float = 1e-6) -> np.ndarray:
  """Each reward minus its group's mean (optionally over the group's std): every group sums to 0,
  and a group whose rewards are all equal has no signal (all 0)."""
  r = np.asarray(rewards_BG, np.float64)
  adv = r - r.mean(axis=1, keepdims=True)
  if scale_by_std:
    adv = adv / (r.std(axis=1, keepdims=True) + eps)
  return adv.astype(np.float32)


def has_signal(rewards_BG: np.ndarray) -> np.ndarray:
  """(B,) whether each group's rewards differ: a group whose rewards are all equal has advantage 0."""
  return np.asarray(rewards_BG).std(axis=1) > 0


def drop_no_signal(loss_mask_RT: np.ndarray, rewards_BG: np.ndarray) -> np.ndarray:
  """The loss mask with the rows of every group whose rewards are all equal set to 0.

  Those rows have advantage 0 and add nothing to the gradient, but under token or sequence
  averaging they still count in its denominator, so the update shrinks as more groups saturate
  (all right or all wrong). Leaving them out of the mask averages over the groups with a signal
  only: DAPO's normalisation for its dynamic sampling, without resampling to refill the batch."""
  signal_R = np.repeat(has_signal(rewards_BG), rewards_BG.shape[1])
  return np.where(signal_R[:, None], loss_mask_RT, 0).astype(loss_mask_RT.dtype)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021)."""
  if n - c < k:
    return 1.0
  return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def training_rows(prompts: Sequence[Sequence[int]], group: int, tokens_RN: np.ndarray, forced_RN: np.ndarray,
                  lengths_R: np.ndarray, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """(R = prompts·group) rows of `seq_len` next-token pairs: [left pad][prompt][completion][pad].

  The prompt is right-aligned at a fixed column (seq_len + 1 − N), so every row has the same
  shape whatever its prompt's length. loss_mask is 1 on the completion's sampled tokens only
  (stop token included): prompt, padding and forced tool outputs get no gradient. Segments:
  0 left padding, 1 the sequence, 2 right padding, so attention never crosses them.
  """
  R, N = tokens_RN.shape
  P = seq_len + 1 - N
  longest = max(len(p) for p in prompts)
  if longest > P:
    raise ValueError(f"a prompt of {longest} tokens does not fit seq_len {seq_len} - max_new_tokens {N} + 1")
  seq = np.full((R, seq_len + 1), pad_id, np.int32)
  seg = np.zeros((R, seq_len + 1), np.int32)
  sampled = np.zeros((R, seq_len + 1), np.float32)
  for r in range(R):
    p = prompts[r // group]
    n = int(lengths_R[r])
    seq[r, P - len(p):P] = p
    seq[r, P:P + n] = tokens_RN[r, :n]
    seg[r, P - len(p):P + n] = 1
    seg[r, P + n:] = 2
    sampled[r, P:P + n] = ~forced_RN[r, :n]
  real = seg == 1
  positions = np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int32)
  return {"inputs": seq[:, :-1], "targets": seq[:, 1:], "positions": positions[:, :-1],
          "segment_ids": seg[:, :-1], "loss_mask": sampled[:, 1:]}


def sampled_chunks(model, params, tok, prompts: Sequence[Sequence[int]], batch: int, samples: int,
                   max_new_tokens: int, *, seed: int, mesh, rules, **engine_kwargs):
  """`samples` completions of every prompt, `batch` prompts per engine call (one prefill each). The
  last call is filled up with its last prompt, so every call has one compiled shape; call i's sampling
  seed is `seed` + its first prompt's index. Yields (start, n real prompts, the call's prompts, rollout):
  rows r < n·samples of the rollout are the real ones, prompt r // samples."""
  for start in range(0, len(prompts), batch):
    call = list(prompts[start:start + batch])
    n = len(call)
    call += [call[-1]] * (batch - n)
    yield start, n, call, engine.rollout(model, params, tok, call, max_new_tokens, seed=seed + start,
                                         samples_per_prompt=samples, pad_multiple=32, mesh=mesh,
                                         rule_pairs=rules, **engine_kwargs)


def completion_text(out: engine.Rollout, r: int, tok) -> tuple[str, bool]:
  """Row r's own words (tool outputs excluded: the verifier reads what the model said) and whether
  its turn ended before the limit."""
  turn = conversation.parse_turn(out.tokens_BN[r, :out.lengths_B[r]].tolist(), tok)
  said = [m["content"] for m in turn["messages"] if m["role"] == "assistant" and m["content"]]
  return "\n".join(said), bool(turn["ended"])


def kl_terms(forward_step, params, ref_params, batch) -> tuple[np.ndarray, np.ndarray]:
  """Per row of `batch` (training rows): the sum of k3 KL(π ‖ π_ref) over its sampled completion
  tokens, and their count. Two forward passes; for KL measured outside the loss."""
  logp, ref, mask = (x.astype(np.float64) for x in sharding.to_host(
      (forward_step(params, batch)["logprobs"], forward_step(ref_params, batch)["logprobs"], batch["loss_mask"])))
  d = ref - logp
  return ((np.exp(d) - d - 1.0) * mask).sum(-1), mask.sum(-1)


@dataclasses.dataclass
class Rollouts:
  """Samples a group per prompt with the current parameters and turns it into a GRPO batch."""
  model: Any
  tok: Any
  mesh: Any
  rules: Any
  forward_step: Callable            # stage.forward_step: (params, batch) → {"logprobs": (B, T)}
  reward: Callable[[str, Any], float]
  group: int                        # G samples per prompt
  max_new_tokens: int
  seq_len: int
  temperature: float = 1.0
  scale_by_std: bool = True
  drop_no_signal: bool = False      # groups without signal leave the loss's denominator (`drop_no_signal`)
  tools: dict | None = None
  max_tool_tokens: int = 64
  ref_params: Any = None            # frozen reference: its log-probs go in the batch (KL in the loss)
  old_logprobs: bool = True         # recompute the rollout policy's log-probs (needed for K > 1 passes)
  # RLHF: (texts, examples) → one score per text, for the whole batch at once (replaces `reward`).
  batch_reward: Callable[[Sequence[str], Sequence[Any]], np.ndarray] | None = None

  def __call__(self, params, examples: Sequence[Any], prompts: Sequence[Sequence[int]], seed: int):
    """→ (global batch for the train step, host metrics). `seed` fixes the sampling stream."""
    t0 = time.perf_counter()
    out = engine.rollout(self.model, params, self.tok, prompts, self.max_new_tokens, tools=self.tools,
                         temperature=self.temperature, seed=seed, samples_per_prompt=self.group,
                         pad_multiple=32, max_tool_tokens=self.max_tool_tokens, mesh=self.mesh,
                         rule_pairs=self.rules)
    t_rollout = time.perf_counter() - t0
    G = self.group
    texts, ended = zip(*(completion_text(out, r, self.tok) for r in range(len(out.lengths_B))))
    if self.batch_reward is not None:
      scores = np.asarray(self.batch_reward(list(texts), [examples[r // G] for r in range(len(texts))]), np.float32)
      if scores.shape != (len(texts),):
        raise ValueError(f"batch_reward returned shape {scores.shape} for {len(texts)} completions")
      rewards_BG = scores.reshape(-1, G)
    else:
      rewards_BG = np.array([self.reward(texts[r], examples[r // G]) for r in range(len(texts))],
                            np.float32).reshape(-1, G)
    adv_BG = group_advantages(rewards_BG, self.scale_by_std)
    rows = training_rows(prompts, G, out.tokens_BN, out.forced_BN, out.lengths_B, self.seq_len,
                         self.tok.pad_id)
    rows["advantages"] = adv_BG.reshape(-1)
    if self.drop_no_signal:
      rows["loss_mask"] = drop_no_signal(rows["loss_mask"], rewards_BG)
    batch = sharding.same_batch_to_global(rows, self.mesh)  # every host has every rollout
    if self.old_logprobs:
      batch["old_logprobs"] = self.forward_step(params, batch)["logprobs"]
    if self.ref_params is not None:
      batch["ref_logprobs"] = self.forward_step(self.ref_params, batch)["logprobs"]
    lengths = out.lengths_B.astype(np.float64)
    # "Correct" means a verifier's 1; a reward model's scores have no such threshold.
    correct = rewards_BG.reshape(-1) > 0.5 if self.batch_reward is None else np.zeros(len(texts), bool)
    info = {
        "rollout/reward": float(rewards_BG.mean()),
        "rollout/response_tokens": float(lengths.mean()),
        "rollout/truncated": float(np.mean(~np.asarray(ended))),
        "rollout/no_signal_groups": float(np.mean(~has_signal(rewards_BG))),
        "rollout/tool_calls": len(out.calls) / len(texts),
        "rollout/seconds": time.perf_counter() - t0,
        "rollout/sampling_seconds": t_rollout,
        "tokens": int(rows["segment_ids"].__eq__(1).sum()),
    }
    if correct.any():  # absent rather than NaN when a batch has none
      info["rollout/correct_tokens"] = float(lengths[correct].mean())
    if (~correct).any() and self.batch_reward is None:
      info["rollout/wrong_tokens"] = float(lengths[~correct].mean())
    return batch, info, texts
