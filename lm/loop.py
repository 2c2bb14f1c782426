"""One stage builder and one run loop for every training stage (pretraining, SFT, GRPO, reward model).

    stage = loop.build_stage(config.model, config.opt, config.train, mesh, rules, losses.next_token)
    loop.run(stage, config, workdir, tokenizer, loop.Hooks(batches=..., evaluate=..., samples=...))

`build_stage` is the one place that turns a config into mesh-placed pieces:
model → optimizer → abstract state and its shardings → the jitted train step,
the evaluation step and the per-example forward step. Stages differ in the loss
factory and in what they feed; `lm/aot.py`, the benchmark and the tests build
their steps here too.

`run` owns what every stage does around the step: resume from the newest
checkpoint (train state + data iterator), or start from `init_params()`
(`init_from`: parameters only, fresh optimizer), progress bar, metrics.jsonl
and TensorBoard, evaluation and samples every `eval_every` steps, checkpoints,
and the loss curve and report at the end. A stage adds behaviour through hooks,
not by copying the loop.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from lm import checkpoint as ckpt_lib
from lm import perf, report, sharding, train
from lm import model as model_lib
from lm.errors import UserError
from lm.metrics import MetricWriter


@dataclasses.dataclass
class Stage:
  model: nn.Module
  mesh: Any
  rules: Any
  tx: Any
  state_abs: train.TrainState       # ShapeDtypeStructs
  state_sh: train.TrainState        # NamedShardings
  train_step: Callable              # (state, batch, rng) → (state, metrics)
  eval_step: Callable               # (params, batch) → summed aux
  forward_step: Callable | None     # (params, batch) → per-example outputs
  sample_inputs: dict

  def init(self, seed: int) -> train.TrainState:
    state, _ = train.init_state(self.model, self.tx, self.mesh, self.rules, self.sample_inputs, seed,
                                self.state_sh)
    return state

  def from_params(self, params) -> train.TrainState:
    return train.state_from_params(params, self.tx, self.state_sh)

  def abstract_state(self) -> train.TrainState:
    """The state as ShapeDtypeStructs carrying their shardings (restore and AOT targets)."""
    return ckpt_lib.abstract_with_shardings(self.state_abs, self.state_sh)

  def abstract_batch(self, batch_size: int, seq_len: int, keys: dict[str, Any]) -> dict:
    """A global batch of ShapeDtypeStructs (`keys`: name → dtype) with the batch sharding, for AOT."""
    sh = sharding.batch_sharding(self.mesh)
    return {k: jax.ShapeDtypeStruct((batch_size, seq_len), dt, sharding=sh) for k, dt in keys.items()}


def build_stage(model_cfg: ml_collections.ConfigDict, opt_cfg: ml_collections.ConfigDict,
                total_steps: int, mesh, rules, loss: Callable[[nn.Module], Callable], *,
                micro_batch: int, seq_len: int, grad_accum: int = 1,
                forward: Callable[[nn.Module], Callable] | None = None, donate: bool = True) -> Stage:
  """mesh → model → optimizer → state shardings → train / eval / forward steps, for one loss."""
  model = model_lib.build(model_cfg)
  tx, schedule = train.make_optimizer(opt_cfg, total_steps)
  sample_inputs = {"tokens_BT": jax.ShapeDtypeStruct((micro_batch, seq_len), np.int32)}
  state_abs, state_sh = train.state_shardings(model, tx, mesh, rules, sample_inputs)
  loss_fn = loss(model)
  step = train.make_train_step(loss_fn, tx, schedule, mesh, rules, state_sh, grad_accum, donate)
  eval_step = train.make_eval_step(loss_fn, mesh, rules, state_sh.params)
  fwd = train.make_forward_step(forward(model), mesh, rules, state_sh.params) if forward else None
  return Stage(model, mesh, rules, tx, state_abs, state_sh, step, eval_step, fwd, sample_inputs)


def stage_from_config(config: ml_collections.ConfigDict, mesh, loss, forward=None) -> Stage:
  """`build_stage` for an experiment config with model / opt / train (steps, batch_size, ...) blocks."""
  t = config.train
  return build_stage(config.model, config.opt, t.steps, mesh, sharding.rules(config), loss,
                     micro_batch=t.batch_size // t.grad_accum, seq_len=t.seq_len,
                     grad_accum=t.grad_accum, forward=forward)


@dataclasses.dataclass
class Hooks:
  """What a stage plugs into `run`."""
  batches: Iterator[dict]                                   # host batches; a Grain iterator (saved in checkpoints)
  tokens_in: Callable[[dict], int]                          # tokens a host batch contributes to throughput
  evaluate: Callable[[Any], dict] | None = None             # params → {"val/...": float}
  samples: Callable[[Any], list[tuple[str, str]]] | None = None  # params → [(prompt, completion)]
  init_params: Callable[[], Any] | None = None              # init_from: parameters on the mesh
  train_metrics: tuple[str, ...] = ("loss", "accuracy")     # step metrics logged as train/<name>
  title: str = "Run"
  report_sections: Callable[[dict], str] | None = None      # final metrics → extra markdown for report.md


TRAIN_KEYS = ("steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "ckpt_every")


def validate_train(config: ml_collections.ConfigDict) -> None:
  """The `train` block every stage shares (and data.val_fraction): one-line errors before anything compiles."""
  for key in TRAIN_KEYS:
    if config.train[key] <= 0:
      raise UserError(f"config.train.{key} must be positive, got {config.train[key]}")
  if not 0 < config.data.val_fraction < 1:
    raise UserError(f"config.data.val_fraction must be in (0, 1), got {config.data.val_fraction}")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.json in the workdir: the first thing a stage writes, after every check has passed."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def held_out(stage: Stage, params, batches, n: int) -> dict:
  """Mean loss and the loss's metrics over `n` host batches (the eval step's sums, one division)."""
  totals: dict[str, float] = {}
  for _, batch in zip(range(n), batches):
    sums = stage.eval_step(params, sharding.host_batch_to_global(batch, stage.mesh))
    for k, v in jax.device_get(sums).items():
      totals[k] = totals.get(k, 0.0) + float(v)
  return {k: float(v) for k, v in train.normalize(totals, max(totals.pop("weight"), 1.0)).items()}


def run(stage: Stage, config: ml_collections.ConfigDict, workdir: str, tokenizer, hooks: Hooks) -> dict:
  """Train `config.train.steps` steps with checkpoints, metrics, evaluation and a report."""
  cfg = config.train
  ckpt_dir = os.path.join(workdir, "checkpoints")

  def fresh() -> train.TrainState:
    return stage.from_params(hooks.init_params()) if hooks.init_params else stage.init(config.seed)

  # A new run builds its state first: an init_from source that fails to load leaves no checkpoints/.
  state = None if os.path.isdir(ckpt_dir) else fresh()
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, cfg.keep_checkpoints, cfg.ckpt_every, cfg.async_checkpoint)
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(start, stage.abstract_state(), hooks.batches)
    print(f"resumed from {ckpt.directory}/{start}", flush=True)
  else:
    state = fresh() if state is None else state
    start = 0

  n_params = model_lib.num_params(state.params)
  flops_tok = model_lib.flops_per_token(config.model, cfg.seq_len)
  peak = perf.measure_matmul_peak(config.model.dtype)
  print(f"model: {n_params / 1e6:.2f}M parameters, mesh {dict(stage.mesh.shape)}, "
        f"measured matmul peak {peak / 1e9:.1f} GFLOP/s/device", flush=True)
  writer = MetricWriter(workdir)
  rng = jax.random.key(config.seed)
  last_samples: list[tuple[str, str]] = []
  final: dict = {}
  t_last, tokens_since = time.perf_counter(), 0
  bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  profile_at = start + cfg.log_every if cfg.profile_steps > 0 else -1

  def evaluate(step: int, params) -> None:
    nonlocal last_samples
    if hooks.evaluate is None:
      return
    ev = hooks.evaluate(params)
    writer.write(step, ev)
    final.update(ev)
    tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()))
    if hooks.samples is not None and step > 0:
      last_samples = hooks.samples(params)
      writer.text(step, "samples", "\n\n".join(p + t for p, t in last_samples))
      for p, t in last_samples:
        tqdm.write(f"  {p!r} → {t[:160]!r}")

  if start == 0:  # the starting model's held-out metrics: where the curves begin
    evaluate(0, state.params)
    t_last = time.perf_counter()
  for step in bar:
    if step == profile_at:  # after compilation and warm-up: a trace of steady-state steps
      jax.profiler.start_trace(os.path.join(workdir, "profile"))
    if step == profile_at + cfg.profile_steps:
      jax.profiler.stop_trace()
    host_batch = next(hooks.batches)
    tokens_since += hooks.tokens_in(host_batch) * jax.process_count()
    state, metrics = stage.train_step(state, sharding.host_batch_to_global(host_batch, stage.mesh), rng)
    done = step + 1
    if done % cfg.log_every == 0 or done == cfg.steps:
      metrics = jax.device_get(metrics)
      tps = tokens_since / (time.perf_counter() - t_last)
      row = {f"train/{k}": metrics[k] for k in hooks.train_metrics if k in metrics}
      row.update({"train/grad_norm": metrics["grad_norm"], "train/lr": metrics["lr"],
                  "perf/tokens_per_sec": tps,
                  "perf/mfu": perf.mfu(flops_tok, tps, peak, jax.device_count())})
      writer.write(done, row)
      bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}")
      final.update(row)
      t_last, tokens_since = time.perf_counter(), 0
    if done % cfg.eval_every == 0 or done == cfg.steps:
      evaluate(done, state.params)
      t_last, tokens_since = time.perf_counter(), 0  # evaluation time is not training throughput
    ckpt.save(done, state, hooks.batches, config, tokenizer, force=done == cfg.steps)
  ckpt.close()
  writer.close()
  final.update({"params_millions": n_params / 1e6, "steps": cfg.steps, **perf.memory_stats()})
  if jax.process_index() == 0:
    plot = report.loss_curve(workdir)
    extra = hooks.report_sections(final) if hooks.report_sections else ""
    report.write_report(workdir, f"{hooks.title}: {os.path.basename(os.path.abspath(workdir))}",
                        final, last_samples, plot, extra)
  return {"state": state, "metrics": final}
