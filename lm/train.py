"""The train state, the optimizer, and the one sharded train-step factory.

Pretraining, SFT, GRPO and the reward model all call `make_train_step` with
their own loss function. The contract for a loss function:

    loss_fn(params, batch, rng) -> (loss_sum, aux)

`loss_sum` is summed (not averaged) over the microbatch and `aux["weight"]` is
what it is summed over (tokens, sequences, pairs). Every other entry of `aux`
is a sum too. The step divides by the total weight across microbatches, so
gradient accumulation gives exactly the full-batch gradient even when
microbatches hold different numbers of real tokens. A metric with its own
denominator (per sequence where the loss is per token) comes as two sums,
`aux["x"]` and `aux["x/weight"]`, and is reported as their ratio.

`make_forward_step` is the per-example counterpart (log-probs, scores) with the
batch sharding kept.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, PartitionSpec as P

from lm.errors import UserError
from lm import sharding

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine to min_lr_ratio·lr, or warmup-stable-decay, or constant."""
  peak, floor = opt.lr, opt.lr * opt.min_lr_ratio
  warmup = optax.linear_schedule(0.0, peak, max(opt.warmup_steps, 1))
  rest = max(total_steps - opt.warmup_steps, 1)
  if opt.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=opt.min_lr_ratio)
  elif opt.schedule == "wsd":
    decay = max(int(rest * opt.decay_fraction), 1)
    after = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)], [rest - decay])
  elif opt.schedule == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise UserError(f"config.opt.schedule: {opt.schedule!r} is not one of cosine, wsd, constant")
  return optax.join_schedules([warmup, after], [opt.warmup_steps])


def decay_mask(params: Any) -> Any:
  """Weight decay on matrices only: not on biases, norm scales or 1-d vectors."""
  def keep(path, leaf):
    name = jax.tree_util.keystr(path)
    return leaf.ndim >= 2 and "scale" not in name and "bias" not in name
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int):
  schedule = make_schedule(opt, total_steps)
  if opt.name == "adamw":
    tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=decay_mask)
  elif opt.name == "sgd":
    tx = optax.sgd(schedule, momentum=opt.b1)
  else:
    raise UserError(f"config.opt.name: {opt.name!r} is not one of adamw, sgd")
  if opt.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.clip_norm), tx)
  return tx, schedule


def param_shardings(model: nn.Module, mesh: Mesh, rule_pairs, sample_inputs: dict):
  """Abstract parameters (ShapeDtypeStructs) and their NamedShardings, computed without FLOPs."""
  boxed = jax.eval_shape(lambda rng: model.init(rng, **sample_inputs)["params"], jax.random.key(0))
  return nn.meta.unbox(boxed), sharding.logical_to_shardings(nn.get_partition_spec(boxed), mesh, rule_pairs)


def state_shardings(model: nn.Module, tx, mesh: Mesh, rule_pairs, sample_inputs: dict):
  """Abstract train state (ShapeDtypeStructs) and its NamedShardings, computed without FLOPs."""
  params_abs, param_sh = param_shardings(model, mesh, rule_pairs, sample_inputs)
  opt_abs = jax.eval_shape(tx.init, params_abs)
  # Optimizer moments shard like their parameters; counters are replicated.
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_abs, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh),
                                 is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
  state_abs = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_abs, opt_state=opt_abs)
  state_sh = TrainState(step=sharding.replicated(mesh), params=param_sh, opt_state=opt_sh)
  return state_abs, state_sh


def _fresh_state(params: Any, tx) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def init_state(model: nn.Module, tx, mesh: Mesh, rule_pairs, sample_inputs: dict, seed: int,
               state_sh: TrainState | None = None):
  """Initialise parameters directly into their shards (no host copy of the full model)."""
  if state_sh is None:
    _, state_sh = state_shardings(model, tx, mesh, rule_pairs, sample_inputs)

  def init(rng):
    return _fresh_state(nn.meta.unbox(model.init(rng, **sample_inputs)["params"]), tx)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rule_pairs):
    state = jax.jit(init, out_shardings=state_sh)(jax.random.key(seed))
  return state, state_sh


def state_from_params(params: Any, tx, state_sh: TrainState) -> TrainState:
  """A fresh train state (step 0, new optimizer moments) around given parameters: `init_from`."""
  return jax.jit(lambda p: _fresh_state(p, tx), in_shardings=(state_sh.params,), out_shardings=state_sh)(params)


def _on_mesh(jitted, mesh: Mesh, rule_pairs):
  """The jitted function called under its mesh and logical-axis rules (`.jitted` for AOT)."""
  def run(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rule_pairs):
      return jitted(*args)
  run.jitted = jitted
  return run


def _split_microbatches(batch: dict, n: int, mesh: Mesh) -> dict:
  """(B, ...) → (n, B/n, ...) keeping each microbatch spread over the batch axes."""
  def split(x):
    x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    spec = P(None, sharding.BATCH_AXES, *([None] * (x.ndim - 2)))
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
  return jax.tree.map(split, batch)


def normalize(sums: dict, weight) -> dict:
  """Summed metrics → means: by `weight`, or by their own `<name>/weight` where given."""
  own = {k[:-len("/weight")] for k in sums if k.endswith("/weight")}
  return {k: v / (jnp.maximum(sums[k + "/weight"], 1.0) if k in own else weight)
          for k, v in sums.items() if not k.endswith("/weight")}


def make_train_step(loss_fn: LossFn, tx, schedule: optax.Schedule, mesh: Mesh, rule_pairs,
                    state_sh: TrainState, grad_accum: int = 1, donate: bool = True):
  """One jitted, sharded step: (state, batch, rng) → (state, metrics).

  Gradients are accumulated in float32 over `grad_accum` microbatches with a
  `lax.scan`; the global gradient norm is measured before clipping. A step whose
  loss or gradient norm is not finite changes nothing but the step counter and
  reports `nonfinite=1`.
  """
  def grads_of(params, batch, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    return grads, dict(aux, loss=loss)

  def step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    if grad_accum == 1:
      grads, sums = grads_of(state.params, batch, rng)
    else:
      micro = _split_microbatches(batch, grad_accum, mesh)
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      _, aux_shape = jax.eval_shape(grads_of, state.params,
                                    jax.tree.map(lambda x: x[0], micro), rng)
      sums0 = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), aux_shape)

      def body(carry, xs):
        mb, i = xs
        g, s = grads_of(state.params, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (g, s)), None

      (grads, sums), _ = jax.lax.scan(body, (zeros, sums0), (micro, jnp.arange(grad_accum)))
    weight = jnp.maximum(sums.pop("weight"), 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = normalize(sums, weight)
    grad_norm = optax.tree.norm(grads)
    # NaN/Inf guard: a non-finite loss or gradient leaves parameters and optimizer state as they
    # were (the select fuses into the update); the loop then skips or stops (config.train.nonfinite).
    finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
              & jnp.isfinite(optax.tree.norm(updates)))  # a NaN learning rate, say
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                     (params, opt_state), (state.params, state.opt_state))
    metrics.update(grad_norm=grad_norm, lr=schedule(state.step), weight=weight,
                   nonfinite=1 - finite.astype(jnp.int32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  batch_sh = sharding.batch_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(state_sh, batch_sh, sharding.replicated(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)),
                   donate_argnames=("state",) if donate else ())
  return _on_mesh(jitted, mesh, rule_pairs)


def make_eval_step(loss_fn: LossFn, mesh: Mesh, rule_pairs, param_sh):
  """Jitted (params, batch) → summed aux (incl. 'loss' and 'weight'); callers divide."""
  def evaluate(params, batch):
    loss, aux = loss_fn(params, batch, jax.random.key(0))
    return dict(aux, loss=loss)

  jitted = jax.jit(evaluate, in_shardings=(param_sh, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))
  return _on_mesh(jitted, mesh, rule_pairs)


def make_forward_step(forward_fn: Callable[[Any, dict], dict], mesh: Mesh, rule_pairs, param_sh):
  """Jitted (params, batch) → per-example outputs, each keeping the batch sharding.

  `forward_fn(params, batch)` returns a dict of arrays whose leading axis is the
  batch (per-token log-probs (B, T), scores (B,), ...). Nothing is reduced or
  gathered: GRPO's old/reference log-probs and the reward model's scores stay on
  the devices that hold their rows.
  """
  batch_sh = sharding.batch_sharding(mesh)
  jitted = jax.jit(forward_fn, in_shardings=(param_sh, batch_sh), out_shardings=batch_sh)
  return _on_mesh(jitted, mesh, rule_pairs)
