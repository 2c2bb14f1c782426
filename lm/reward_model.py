"""The reward model's pieces around the shared stage: its starting parameters and its AOT compile.

A reward model is the transformer with `model.head='score'` (lm/model.py): the
trunk of an earlier stage (a base or SFT workdir, or a Hugging Face causal LM)
under a fresh scalar head. `load_params` reads the source's trunk straight into
its shards — the source's LM head is never read — and initialises the head from
the model's own initializer (normal, `model.init_std`). A source that already is
a reward model (a reward workdir, a *ForSequenceClassification folder) keeps its
head. Training is `lm.losses.ranking` through `lm.train.make_train_step`.

`Scorer` (built from a reward-model workdir by `load_scorer`) is RLHF's reward:
(prompt messages, reply text) pairs rendered exactly as in training and scored
in fixed-shape batches by the forward step (lm.losses.scores) on the mesh.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lm import aot, init_from, loop, losses, sharding, train
from lm.errors import UserError

HEAD = "score"
# The batch lm.losses.ranking reads: name → (dtype, per-row shape is (T,) or ()).
BATCH = {"inputs": (np.int32, True), "mask": (np.int32, True), "group": (np.int32, False),
         "rank": (np.int32, False)}


def fresh_head(model_cfg, abstract_params: Any, seed: int) -> Any:
  """New "score" parameters, normal(0, model.init_std) as the model's initializer makes them, placed
  in their shards (drawn directly: a jitted model.init would compile the whole network for them)."""
  leaves, treedef = jax.tree.flatten(abstract_params[HEAD])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  drawn = [jax.jit(lambda k, a=a: model_cfg.init_std * jax.random.normal(k, a.shape, a.dtype),
                   out_shardings=a.sharding)(k) for k, a in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, drawn)


def load_params(source: init_from.Source, stage: loop.Stage, seed: int) -> Any:
  """Parameters to start a reward model from `source`, placed like the stage's state."""
  abstract = stage.abstract_state().params
  if stage.model.cfg.head != HEAD:
    raise UserError(f"config.model.head must be {HEAD!r} for a reward model, got {stage.model.cfg.head!r}")
  if source.model_cfg.head == HEAD:
    return init_from.load_params(source, stage.model.cfg, abstract)
  trunk = init_from.load_params(source, stage.model.cfg, {k: v for k, v in abstract.items() if k != HEAD})
  return {**trunk, HEAD: fresh_head(stage.model.cfg, abstract, seed)}


def abstract_batch(stage: loop.Stage, batch_size: int, seq_len: int) -> dict:
  """A global ranking batch of ShapeDtypeStructs with the batch sharding (AOT)."""
  sh = sharding.batch_sharding(stage.mesh)
  return {k: jax.ShapeDtypeStruct((batch_size, seq_len) if per_token else (batch_size,), dt, sharding=sh)
          for k, (dt, per_token) in BATCH.items()}


def compile_train_step(config, mesh) -> tuple[object, dict]:
  """AOT-compile a reward-model config's train step (ranking loss, its batch) → (compiled, stats)."""
  sharding.check_model_fits(config.model, mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  stage = loop.stage_from_config(config, mesh, losses.ranking)
  return aot.compile_stage_step(stage, abstract_batch(stage, config.train.batch_size, config.train.seq_len))


SAME_TOKENIZER_PROBE = "Where does Alma Quenquist work? She works for Blue Labs, since 1987."


class Scorer:
  """A trained reward model as RLHF's reward: (prompts, responses) → scores, batched on the mesh.

  Each (prompt, response) is rendered with the one conversation renderer exactly as the reward
  model saw it in training (lm/data/ranking_rows.render_row), laid out right-padded in rows of
  `seq_len`, and scored `batch_size` rows per forward step (a fixed shape: the last batch is
  filled with empty rows, whose scores are dropped). `load_scorer` builds one from a reward-model
  workdir and checks that it shares the policy's tokenizer (the policy's text is re-encoded here).
  """

  def __init__(self, model, params, tok, mesh, rules, *, seq_len: int, batch_size: int):
    self.model, self.params, self.tok = model, params, tok
    self.forward = train.make_forward_step(losses.scores(model), mesh, rules,
                                           jax.tree.map(lambda a: a.sharding, params))
    self.mesh, self.seq_len, self.batch_size = mesh, seq_len, batch_size

  def rows(self, prompts, responses) -> dict[str, np.ndarray]:
    """The rendered rows (inputs, mask) of each (prompt messages, response text), unpadded in count."""
    from lm.data import ranking_rows
    n = len(responses)
    if len(prompts) != n:
      raise ValueError(f"Scorer: {len(prompts)} prompts for {n} responses (one prompt per response)")
    inputs = np.full((n, self.seq_len), self.tok.pad_id, np.int32)
    mask = np.zeros((n, self.seq_len), np.int32)
    for i, (prompt, text) in enumerate(zip(prompts, responses)):
      ids, _, _ = ranking_rows.render_row(prompt, text, self.tok, self.seq_len)
      inputs[i, :ids.size], mask[i, :ids.size] = ids, 1
    return {"inputs": inputs, "mask": mask}

  def __call__(self, prompts, responses) -> np.ndarray:
    """float32 scores, one per response; `prompts[i]` is the message list response i answers."""
    rows = self.rows(prompts, responses)
    n, B = len(responses), self.batch_size
    out = []
    for start in range(0, n, B):
      chunk = {k: v[start:start + B] for k, v in rows.items()}
      fill = B - len(chunk["inputs"])
      if fill:
        chunk = {k: np.concatenate([v, np.full((fill, self.seq_len), self.tok.pad_id if k == "inputs" else 0,
                                               np.int32)]) for k, v in chunk.items()}
      scores = self.forward(self.params, sharding.host_batch_to_global(chunk, self.mesh))["scores"]
      out.append(np.asarray(scores, np.float32)[:B - fill])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def same_tokenizer(a, b) -> bool:
  """Same vocabulary size, special tokens and encoding of a probe text."""
  return (a.vocab_size == b.vocab_size and dict(a.special_ids) == dict(b.special_ids)
          and list(a.encode(SAME_TOKENIZER_PROBE)) == list(b.encode(SAME_TOKENIZER_PROBE)))


def load_scorer(workdir: str, step: int, mesh, rules, *, seq_len: int, batch_size: int, policy_tok=None,
                names: dict | None = None) -> Scorer:
  """The reward model of a workdir (experiments.reward_model) as a `Scorer`; `names` says what errors
  call its workdir and step (default config.reward.workdir / .step)."""
  import ml_collections
  from lm import model as model_lib
  names = names or {"workdir": "config.reward.workdir", "step": "config.reward.step"}
  names = {"hf_dir": names["workdir"], **names}
  source = init_from.resolve(ml_collections.ConfigDict({"workdir": workdir, "hf_dir": "", "step": step}), names)
  if source.model_cfg.head != HEAD:
    raise UserError(f"{names['workdir']}: {workdir!r} is not a reward model (its model.head is "
                    f"{source.model_cfg.head!r}, not {HEAD!r}); train one with experiments.reward_model")
  if policy_tok is not None and not same_tokenizer(source.tokenizer, policy_tok):
    raise UserError(f"{names['workdir']}: the reward model's tokenizer differs from the policy's; train the reward "
                    f"model from the policy's chain (init_from its SFT or base run)")
  cfg = ml_collections.ConfigDict(source.model_cfg.to_dict())
  params = init_from.load_params(source, cfg, init_from.abstract_params(cfg, mesh, rules))
  return Scorer(model_lib.build(cfg), params, source.tokenizer, mesh, rules, seq_len=seq_len, batch_size=batch_size)
