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

import atexit
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
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
  # Batches the model makes itself (RL rollouts): (state, step) → (global batch, host metrics, with
  # "tokens" for throughput). `batches` then only feeds it (its prompts) and is checkpointed as usual.
  batch_for: Callable[[Any, int], tuple[dict, dict]] | None = None


TRAIN_KEYS = ("steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "ckpt_every")


def validate_train(config: ml_collections.ConfigDict) -> None:
  """The `train` block every stage shares (and data.val_fraction, opt.lr): one-line errors before
  anything compiles."""
  for key in TRAIN_KEYS:
    if config.train[key] <= 0:
      raise UserError(f"config.train.{key} must be positive, got {config.train[key]}")
  if "val_fraction" in config.get("data", {}) and not 0 < config.data.val_fraction < 1:
    raise UserError(f"config.data.val_fraction must be in (0, 1), got {config.data.val_fraction}")
  if not 0 < config.opt.lr < float("inf"):
    raise UserError(f"config.opt.lr must be a positive number, got {config.opt.lr}")
  if config.train.get("nonfinite", "stop") not in ("stop", "skip"):
    raise UserError(f"config.train.nonfinite must be 'stop' or 'skip', got {config.train.nonfinite!r}")


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


class Diverged(UserError):
  """A non-finite loss or gradient under config.train.nonfinite='stop'."""


LOCK = ".lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def lock_workdir(workdir: str) -> None:
  """One workdir, one job: `<workdir>/.lock` holds the owner's host and pid until it exits.
  A second job gets a one-line error naming them; a lock left by a dead process on this host
  (SIGKILL, power loss) is taken over with a line saying so. Process 0 holds it for all hosts."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          owner = json.load(f)
      except (OSError, ValueError):
        owner = None  # being written by its owner this instant, or garbage
      if owner is None:
        time.sleep(0.2)
        continue
      if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
        return  # this process already holds it
      if owner.get("host") == me["host"] and not _alive(int(owner.get("pid", -1))):
        print(f"warning: taking over the lock of {workdir}: pid {owner.get('pid')} on {owner.get('host')} "
              "is no longer running", flush=True)
        os.remove(path)
        continue
      raise UserError(f"workdir {workdir} is in use by pid {owner.get('pid')} on {owner.get('host')} "
                      f"(since {owner.get('started')}; lock file {path}): use another --workdir, or wait "
                      "for that job (delete the lock only if it is not running)")
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    atexit.register(_unlock, path, me)
    return
  raise UserError(f"workdir {workdir}: could not take the lock {path}; delete it if no job is running there")


def _unlock(path: str, me: dict) -> None:
  try:
    with open(path) as f:
      if json.load(f) == me:
        os.remove(path)
  except (OSError, ValueError):
    pass


class _Signals:
  """SIGTERM / SIGINT: finish the current step, save, exit (0 after SIGTERM). A second one exits at once.

  On several processes the stop step must be the same on all of them (the save is collective), and
  a signal may reach only some. SIGTERM is then left to jax.distributed's preemption notifier (a
  Python handler would replace it), whose sync point every process reaches at the same step;
  SIGINT is turned into a SIGTERM to this process, so it takes the same road."""

  def __init__(self):
    self.received: int | None = None
    self.previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      multi = jax.process_count() > 1
      for sig in (signal.SIGINT,) if multi else (signal.SIGTERM, signal.SIGINT):
        self.previous[sig] = signal.signal(sig, self._handle_multi if multi else self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    if self.received is not None:
      os._exit(128 + signum)
    self.received = signum
    tqdm.write(f"{signal.Signals(signum).name}: finishing this step, saving a checkpoint, then exiting "
               "(send it again to exit at once)")

  def _handle_multi(self, signum, frame):
    self._handle(signum, frame)
    os.kill(os.getpid(), signal.SIGTERM)  # to the preemption notifier: every process stops at one step

  def stop_at(self, step: int) -> bool:
    """Whether every process stops after `step`: on several hosts, the preemption sync point that
    jax.distributed's coordination service agrees on (it sees the cluster's SIGTERM)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None


def _check_architecture(ckpt: ckpt_lib.Checkpointer, step: int, config: ml_collections.ConfigDict) -> None:
  """A resume whose model differs from the checkpoint's: one line naming the keys, nothing written."""
  saved, _ = ckpt.restore_meta(step)
  theirs = saved.get("model", {})
  diff = [f"model.{k}: checkpoint {theirs[k]!r}, config {config.model[k]!r}"
          for k in model_lib.ARCHITECTURE_KEYS if k in theirs and theirs[k] != config.model[k]]
  if diff:
    raise UserError(f"resume from {ckpt.directory}/{step}: the model differs ({'; '.join(diff)}); "
                    "use the checkpoint's settings or a new --workdir")


def _state_bytes(stage: Stage) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(stage.state_abs))


def run(stage: Stage, config: ml_collections.ConfigDict, workdir: str, tokenizer, hooks: Hooks) -> dict:
  """Train `config.train.steps` steps with checkpoints, metrics, evaluation and a report.

  Order: resume (the newest checkpoint that loads, its model checked against the config) or a
  fresh state; then config.json and a check that checkpoints can be written; then the steps.
  A finished run is left as it is. SIGTERM/SIGINT save and exit; a non-finite step is skipped or
  stops the run (config.train.nonfinite) without saving it.
  """
  cfg = config.train
  ckpt_dir = os.path.join(workdir, "checkpoints")
  policy = cfg.get("nonfinite", "stop")

  def fresh() -> train.TrainState:
    return stage.from_params(hooks.init_params()) if hooks.init_params else stage.init(config.seed)

  ckpt_lib.preflight(ckpt_dir, _state_bytes(stage))  # writable, room for checkpoints: seconds, not a timeout
  # A new run builds its state first: an init_from source that fails to load leaves no checkpoints/.
  state = None if os.path.isdir(ckpt_dir) else fresh()
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, cfg.keep_checkpoints, cfg.ckpt_every, cfg.async_checkpoint)
  steps = ckpt.steps()
  if steps:
    saved = ckpt.saved_processes(steps[-1])
    if saved is not None and saved != jax.process_count():
      ckpt.close()
      raise UserError(f"{ckpt.directory}/{steps[-1]} was written by {saved} processes and this run has "
                      f"{jax.process_count()}: each saved its own data iterator, so resume with {saved} "
                      f"(launch/local.sh: NPROC={saved})")
    _check_architecture(ckpt, steps[-1], config)
    restored = ckpt.restore_newest(stage.abstract_state(), hooks.batches)
    if restored is None:
      ckpt.close()
      raise UserError(f"no checkpoint under {ckpt_dir} loads (steps {steps}); move them away to start "
                      "afresh, or restore an intact copy")
    start, state = restored
    print(f"resumed from {ckpt.directory}/{start}", flush=True)
  else:
    state = fresh() if state is None else state
    start = 0
  if start >= cfg.steps:
    ckpt.close()
    print(f"{workdir} already finished at step {start} (config.train.steps={cfg.steps}): nothing to do, "
          "its report is kept", flush=True)
    return {"state": state, "metrics": {}}
  write_config(config, workdir)

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
  # The bar counts completed steps, not dispatched ones: it advances when a step's metrics have been
  # read back (one step late, see `pending`), and its rate leaves out the first step's compilation and
  # the evaluations, so the ETA is steps left × the steady step time.
  bar = tqdm(initial=start, total=cfg.steps, desc="train", unit="step", smoothing=0.1,
             disable=jax.process_index() != 0, dynamic_ncols=True)
  first_done = start + 1

  def completed(step: int) -> None:
    if step <= bar.n or bar.disable:
      return
    if step == first_done:  # compilation is not the steady rate: the rate starts after this step
      bar.n = bar.last_print_n = bar.initial = step
      bar.last_print_t = time.time()  # tqdm's clock
      bar.refresh()
    else:
      bar.update(step - bar.n)
  profile_at = start + cfg.log_every if cfg.profile_steps > 0 else -1
  skipped = 0
  pending = None  # (step, its metrics): read one step late, so the device is never left idle
  step_info: dict = {}  # host metrics from hooks.batch_for since the last metric line

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

  def check_finite(step_and_metrics) -> None:
    nonlocal skipped
    if step_and_metrics is None:
      return
    step, metrics = step_and_metrics
    nonfinite = int(metrics["nonfinite"])  # waits for that step: it is complete from here on
    completed(step)
    if not nonfinite:
      return
    what = f"non-finite loss, gradient or update (loss {float(metrics['loss']):.4g}, gradient norm " \
           f"{float(metrics['grad_norm']):.4g})"
    if policy == "skip":
      skipped += 1
      tqdm.write(f"step {step}: {what}: update skipped ({skipped} so far; config.train.nonfinite='skip')")
      return
    last = ckpt.latest_step()
    raise Diverged(f"step {step}: {what}; the run stops "
                   f"(config.train.nonfinite='stop') with its last checkpoint at "
                   f"{f'{ckpt.directory}/{last}' if last is not None else 'none'} intact: resume with a lower "
                   "opt.lr or opt.clip_norm, or set config.train.nonfinite='skip'")

  if start == 0:  # the starting model's held-out metrics: where the curves begin
    evaluate(0, state.params)
    t_last = time.perf_counter()
  stopped_by = None
  try:
    with _Signals() as signals:
      for step in range(start, cfg.steps):
        if step == profile_at:  # after compilation and warm-up: a trace of steady-state steps
          jax.profiler.start_trace(os.path.join(workdir, "profile"))
        if step == profile_at + cfg.profile_steps:
          jax.profiler.stop_trace()
        if hooks.batch_for is not None:
          batch, info = hooks.batch_for(state, step)
          tokens_since += info.pop("tokens", 0)
          step_info.update(info)
        else:
          host_batch = next(hooks.batches)
          tokens_since += hooks.tokens_in(host_batch) * jax.process_count()
          batch = sharding.host_batch_to_global(host_batch, stage.mesh)
        state, metrics = stage.train_step(state, batch, rng)
        done = step + 1
        check_finite(pending)
        pending = (done, metrics)
        ckpt.check_errors()
        if done % cfg.log_every == 0 or done == cfg.steps:
          check_finite(pending)
          pending = None
          metrics = jax.device_get(metrics)
          completed(done)
          tps = tokens_since / (time.perf_counter() - t_last)
          row = {f"train/{k}": metrics[k] for k in hooks.train_metrics if k in metrics}
          row.update({"train/grad_norm": metrics["grad_norm"], "train/lr": metrics["lr"],
                      "perf/tokens_per_sec": tps,
                      "perf/mfu": perf.mfu(flops_tok, tps, peak, jax.device_count())})
          if policy == "skip":
            row["train/skipped_steps"] = skipped
          row.update(step_info)  # the last step's rollout metrics
          step_info.clear()
          writer.write(done, row)
          bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}")
          final.update(row)
          t_last, tokens_since = time.perf_counter(), 0
        if done % cfg.eval_every == 0 or done == cfg.steps:
          evaluate(done, state.params)
          t_last, tokens_since = time.perf_counter(), 0  # evaluation time is not training throughput
          bar.last_print_t = time.time()  # nor is it the bar's rate
        if signals.stop_at(done):
          check_finite(pending)
          pending = None
          ckpt.save(done, state, hooks.batches, config, tokenizer, force=True)
          stopped_by = signals.received or signal.SIGTERM
          break
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
          check_finite(pending)  # a non-finite step is never saved
          pending = None
        ckpt.save(done, state, hooks.batches, config, tokenizer, force=done == cfg.steps)
  finally:
    bar.close()
    ckpt.close()  # waits for the last save to commit; raises SaveFailed if it did not
    writer.close()
  if stopped_by is not None:
    name = signal.Signals(stopped_by).name
    print(f"{name}: stopped after step {done}, checkpoint {ckpt.directory}/{done} committed; "
          "run the same command to resume", flush=True)
    sys.exit(0 if stopped_by == signal.SIGTERM else 128 + stopped_by)
  final.update({"params_millions": n_params / 1e6, "steps": cfg.steps, **perf.memory_stats()})
  if policy == "skip":
    final["skipped_steps"] = skipped
  if jax.process_index() == 0:
    plot = report.loss_curve(workdir)
    extra = hooks.report_sections(final) if hooks.report_sections else ""
    report.write_report(workdir, f"{hooks.title}: {os.path.basename(os.path.abspath(workdir))}",
                        final, last_samples, plot, extra)
  return {"state": state, "metrics": final}
