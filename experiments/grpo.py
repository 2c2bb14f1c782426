"""GRPO on verifiable tasks: python -m experiments.grpo --config=configs/grpo.py:tiny --workdir=runs/grpo \\
    --config.init_from.workdir=runs/sft_arith
RLHF (the reward from a reward model, configs/rlhf.py): the same stage with `reward.kind=model`.

Each iteration samples `rl.group` completions for each of `rl.prompts_per_step`
training prompts with the current parameters (the rollout engine: one prefill
per prompt, tools when `tools.use` is set), scores them with the task's
verifier, turns the rewards into group-relative advantages, recomputes the
rollout policy's log-probs with the training forward when `rl.passes` > 1
(and the frozen reference's when the KL is in the loss), and takes
`rl.passes` optimizer steps of the clipped objective
(lm/losses.py:grpo) on the shared loop. The prompt iterator is a Grain iterator
saved with every checkpoint, the sampling stream is a function of (seed, step),
and the reference sits in `<workdir>/reference`: a killed run resumes exactly.
On several processes (`NPROC=2 bash launch/local.sh experiments.grpo ...`) every
process takes the same prompts and drives the same sharded rollout, gathers
all of its rows, scores them and feeds the same batch (each device its rows):
the losses are one process's. RLHF (`reward.kind=model`) is one process only.

Evaluation, independent of the training reward, every `train.eval_every`
iterations on held-out prompts: greedy accuracy and format, pass@1 and pass@k
from `eval.samples` samples at the rollout temperature, mean length of correct
and of wrong answers, and the KL from the reference on those samples
(`rl.measure_kl`: measured here rather than paying two forward passes per iteration). A warning is printed and written to the report when the
training reward rises while held-out pass@1 falls, and when many completions
are cut by the length limit. report.md has the curves (accuracy and length
against step) and the share of each iteration spent in rollout vs update.

RLHF is this stage with `reward.kind='model'`: the rollouts' reward is a reward
model's score of (prompt, reply) (`reward.workdir`, lm/reward_model.Scorer, one
batched forward per iteration) instead of the verifier, with `rl.kl_coef` > 0.
Each evaluation then also logs the held-out samples' proxy reward, a second
reward model's (`reward.stop_workdir`: the early-stopping rule) and the hidden
gold reward (`reward.gold`, lm/gold.py), with the KL per reply; best-of-n against
the proxy is measured once at the start (`eval.best_of_n`); report.md gets the
over-optimisation section (lm/rlhf.py).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from ml_collections import config_flags
from tqdm import tqdm

from lm import chat_template, cli, evaluation, grpo, init_from, loop, losses, report, rlhf, sharding, tasks
from lm import model as model_lib
from lm import tools as tools_lib
from lm.errors import UserError
from lm.metrics import read_metrics


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  source: init_from.Source       # where the policy (and the reference) start
  tokenizer: Any
  tasks: dict                    # name → task
  train_examples: list
  train_prompts: list            # rendered prompt ids, one per train example
  eval_examples: list
  eval_prompts: list             # rendered prompt ids, one per eval example
  eval_seq_len: int              # row length of the held-out samples' KL forward (one shape)
  tools: dict
  judges: rlhf.Judges | None = None  # RLHF: the reward model(s) and the gold labeller, at evaluation
  warnings: list = dataclasses.field(default_factory=list)
  history: list = dataclasses.field(default_factory=list)  # (step, mean train reward since last eval, pass@1)
  rewards_since_eval: list = dataclasses.field(default_factory=list)
  timing: dict = dataclasses.field(default_factory=lambda: {"rollout": 0.0, "update": 0.0})
  step: int = 0                  # iterations done (the step an evaluation belongs to)
  start_pass1: float | None = None  # held-out pass@1 of the starting model (gains are against it)
  started: float = dataclasses.field(default_factory=time.perf_counter)  # set up (after imports, data)
  minutes_before: float = 0.0    # wall minutes of earlier processes of this run (resumed)


def validate(config) -> None:
  loop.validate_train(config)
  rl = config.rl
  if rl.group < 2:
    raise UserError(f"config.rl.group={rl.group}: a group needs at least 2 samples to compare")
  if rl.passes < 1 or rl.prompts_per_step < 1 or rl.max_new_tokens < 1:
    raise UserError("config.rl.passes, rl.prompts_per_step and rl.max_new_tokens must be positive")
  if config.train.batch_size != rl.prompts_per_step * rl.group:
    raise UserError(f"config.train.batch_size={config.train.batch_size} must equal rl.prompts_per_step × "
                    f"rl.group = {rl.prompts_per_step * rl.group}")
  if rl.aggregation not in losses.AGGREGATIONS:
    raise UserError(f"config.rl.aggregation: {rl.aggregation!r} is not one of {', '.join(losses.AGGREGATIONS)}")
  if rl.wrong_penalty < 0:
    raise UserError(f"config.rl.wrong_penalty={rl.wrong_penalty} must be ≥ 0 (what a wrong reply loses against "
                    f"a refusal)")
  if rl.wrong_penalty and config.reward.kind != "task":
    raise UserError(f"config.rl.wrong_penalty={rl.wrong_penalty} shapes the task verifier's reward; "
                    f"config.reward.kind={config.reward.kind!r} does not use it (set it to 'task' or the penalty to 0)")
  if not (0 <= rl.clip_low < 1 and rl.clip_high >= 0):
    raise UserError(f"config.rl.clip_low must be in [0, 1) and clip_high ≥ 0; got {rl.clip_low}, {rl.clip_high}")
  if rl.kl_coef < 0 or rl.temperature <= 0:
    raise UserError("config.rl.kl_coef must be ≥ 0 and config.rl.temperature > 0")
  if rl.max_new_tokens >= config.train.seq_len:
    raise UserError(f"config.rl.max_new_tokens={rl.max_new_tokens} leaves no room for the prompt in "
                    f"config.train.seq_len={config.train.seq_len}")
  if config.eval.samples < 1:
    raise UserError("config.eval.samples must be ≥ 1")
  rlhf.validate(config)


def make_tasks(config) -> dict:
  names = [n for n in config.data.tasks.split(",") if n] + [n for n in config.eval.tasks.split(",") if n]
  if not [n for n in config.data.tasks.split(",") if n]:
    raise UserError("config.data.tasks is empty: name at least one task to train on")
  world = config.data.world or None
  if world and not os.path.exists(world):
    raise UserError(f"config.data.world: no such file {world!r} (the crawl's world.json)")
  options = ml_collections.ConfigDict(config.tasks.to_dict())
  if "gsm8k" in names:
    if not os.path.exists(config.data.gsm8k):
      raise UserError(f"config.data.gsm8k: no such file {config.data.gsm8k!r} (GSM8K JSONL)")
    options.gsm8k = ml_collections.ConfigDict({"path": config.data.gsm8k})
  return tasks.from_config(names, options, world, config.data.world_seed, config.data.exposures)


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  validate(config)
  sharding.initialize_distributed()
  if jax.process_count() > 1 and config.reward.kind == "model":
    raise UserError("config.reward.kind='model' (RLHF) runs in one process for now (the reward model's "
                    "scores and its sample files are not yet split across hosts); use one process per job")
  own = init_from.own_checkpoint(workdir)
  source = init_from.resolve(config.init_from)
  with config.unlocked():
    config.model = init_from.merge_model_config(config.model, own or source)
  model_lib.validate(config.model)
  tok = (own or source).tokenizer
  if tok is None or "<|im_end|>" not in getattr(tok, "special_ids", {}):
    raise UserError("config.init_from: the source's tokenizer has no chat special tokens; start GRPO from "
                    "an SFT run of this project (experiments.sft)")
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  sharding.check_model_fits(config.model, mesh)
  task_objs = make_tasks(config)
  names = [n for n in config.data.tasks.split(",") if n]
  per_task = [task_objs[n].examples("train", config.data.train_prompts, config.seed) for n in names]
  train_examples = [ex for group in zip(*per_task) for ex in group]  # interleaved: an even mix
  fmt = chat_template.OwnFormat(tok)
  prompts = [fmt.render_prompt(ex.messages).tolist() for ex in train_examples]
  room = config.train.seq_len + 1 - config.rl.max_new_tokens
  too_long = [i for i, p in enumerate(prompts) if len(p) > room]
  if too_long:
    raise UserError(f"config.train.seq_len={config.train.seq_len}: {len(too_long)} training prompts are longer "
                    f"than seq_len + 1 - rl.max_new_tokens = {room} tokens (longest "
                    f"{max(len(prompts[i]) for i in too_long)}); raise seq_len or lower rl.max_new_tokens")
  eval_examples = [ex for n in config.eval.tasks.split(",") if n
                   for ex in task_objs[n].examples("eval", config.eval.examples, 0)]
  eval_prompts = [fmt.render_prompt(ex.messages).tolist() for ex in eval_examples]  # once, not per evaluation
  eval_seq_len = -(-(max(map(len, eval_prompts)) + config.eval.max_new_tokens) // 32) * 32
  use = [n for n in config.tools.use.split(",") if n]
  tools = tools_lib.for_conversation(use, key="config.tools.use", world_seed=config.data.world_seed) if use else {}
  judges = rlhf.make_judges(config, mesh, sharding.rules(config), tok, task_objs)
  loop.lock_workdir(workdir)
  print(f"grpo: {len(train_examples)} training prompts ({', '.join(names)}), {len(eval_examples)} held out, "
        f"{config.rl.prompts_per_step} × {config.rl.group} completions per iteration", flush=True)
  return Run(config, workdir, mesh, source, tok, task_objs, train_examples, prompts, eval_examples,
             eval_prompts, eval_seq_len, tools, judges)


def prompt_iterator(n: int, per_step: int, seed: int):
  """Indices of each iteration's prompts: reshuffled every pass over the set; a Grain iterator,
  so its position is saved with every checkpoint."""
  ds = grain.MapDataset.range(n).shuffle(seed=seed).repeat().batch(per_step, drop_remainder=True)
  return iter(ds.to_iter_dataset())


def reward_of(run: Run):
  """The task's verifier; with `rl.wrong_penalty` p, a reply neither right nor a refusal scores −p (a
  refusal 0): declining beats a confident wrong answer, answering right beats both."""
  penalty = run.config.rl.wrong_penalty
  return lambda text, ex: evaluation.honesty_reward(run.tasks[ex.task], text, ex, penalty)


def verifier_of(run: Run):
  """The tasks' own verifiers, unshaped: what held-out accuracy is measured with."""
  return lambda text, ex: run.tasks[ex.task].reward(text, ex)


def rm_reward(run: Run):
  """RLHF's batch reward: the reward model's scores of (prompt, reply), or None (the verifier)."""
  if run.config.reward.kind != "model":
    return None
  return lambda texts, examples: run.judges.proxy([ex.messages for ex in examples], texts)


def reference(run: Run, stage: loop.Stage, start_params_fn):
  """The frozen reference: written once to <workdir>/reference (so a resumed run uses the very
  same one, whatever became of the source), read from there on resume. None when unused."""
  rl = run.config.rl
  if rl.kl_coef == 0 and not rl.measure_kl:
    return None
  path = os.path.join(os.path.abspath(run.workdir), "reference")
  target = stage.abstract_state().params
  ckptr = ocp.StandardCheckpointer()
  exists = os.path.isdir(path)
  if jax.process_count() > 1:  # process 0's answer for all: the save is collective, and another may be writing it
    from jax.experimental import multihost_utils
    exists = bool(multihost_utils.broadcast_one_to_all(np.bool_(exists)))
  if exists:
    return ckptr.restore(path, target)
  params = start_params_fn()
  ckptr.save(path, params)
  ckptr.wait_until_finished()
  return params


def evaluate(run: Run, stage: loop.Stage, params, ref=None) -> dict:
  """Greedy accuracy and format, sampled pass@1 / pass@k and lengths, on held-out prompts; with a
  reference, the KL from it per sampled token (k3, on the same held-out samples)."""
  cfg, rl = run.config, run.config.rl
  reward = verifier_of(run)
  rows = evaluation.run_tasks(stage.model, params, run.tokenizer, run.eval_examples, reward,
                              max_new_tokens=cfg.eval.max_new_tokens, mesh=run.mesh, rules=stage.rules,
                              batch_size=rl.prompts_per_step, tools=run.tools,
                              max_tool_tokens=cfg.tools.max_tool_tokens,
                              refuses=lambda text, ex: evaluation.declines(run.tasks[ex.task], text, ex))
  out = {k.replace("eval/", "eval/greedy_", 1) if k.endswith("accuracy") else k: v
         for k, v in evaluation.summarize(rows).items()}
  k = cfg.eval.samples
  correct, lengths, kl_sum, kl_tokens = [], [], 0.0, 0.0
  said, ended_all = [], []
  for start, n, prompts, ro in grpo.sampled_chunks(
      stage.model, params, run.tokenizer, run.eval_prompts, rl.prompts_per_step, k, cfg.eval.max_new_tokens,
      seed=1_000_003, mesh=run.mesh, rules=stage.rules, tools=run.tools, temperature=rl.temperature,
      max_tool_tokens=cfg.tools.max_tool_tokens):
    chunk = run.eval_examples[start:start + n]
    for i, ex in enumerate(chunk):
      for j in range(k):
        r = i * k + j
        text, ended = grpo.completion_text(ro, r, run.tokenizer)
        said.append(text)
        ended_all.append(ended)
        correct.append(reward(text, ex) > 0.5)
        lengths.append(int(ro.lengths_B[r]))
    if ref is not None:
      rows = grpo.training_rows(prompts, k, ro.tokens_BN, ro.forced_BN, ro.lengths_B, run.eval_seq_len,
                                run.tokenizer.pad_id)
      s_R, n_R = grpo.kl_terms(stage.forward_step, params, ref, sharding.same_batch_to_global(rows, run.mesh))
      kl_sum += s_R[:len(chunk) * k].sum()  # not the repeated rows that fill the last chunk
      kl_tokens += n_R[:len(chunk) * k].sum()
  c_EK = np.array(correct).reshape(-1, k)
  len_EK = np.array(lengths, np.float64).reshape(-1, k)
  out["eval/pass@1"] = float(c_EK.mean())
  out[f"eval/pass@{k}"] = float(np.mean([grpo.pass_at_k(k, int(c.sum()), k) for c in c_EK]))
  if c_EK.any():  # absent rather than NaN when there is none
    out["eval/length_correct"] = float(len_EK[c_EK].mean())
  if (~c_EK).any():
    out["eval/length_wrong"] = float(len_EK[~c_EK].mean())
  check_divergence(run, run.step, out["eval/pass@1"])
  if run.start_pass1 is None:  # this process's first evaluation: what earlier ones of the run logged
    logged = read_metrics(run.workdir)
    first = [r for r in logged if r.get("step") == 0 and "eval/pass@1" in r]
    run.start_pass1 = first[0]["eval/pass@1"] if first else out["eval/pass@1"]  # the starting model's
    run.minutes_before = max((r["time/minutes"] for r in logged if "time/minutes" in r), default=0.0)
  out["eval/pass@1_gain"] = out["eval/pass@1"] - run.start_pass1
  out["time/minutes"] = run.minutes_before + (time.perf_counter() - run.started) / 60
  if kl_tokens:
    out["eval/kl"] = float(kl_sum / kl_tokens)
    out["eval/kl_reply"] = float(kl_sum / len(said))  # per reply: the unit of best-of-n's KL
  if run.judges is not None:
    judge_rlhf(run, stage, params, said, ended_all, out)
  return out


def judge_rlhf(run: Run, stage: loop.Stage, params, said: list, ended: list, out: dict) -> None:
  """RLHF: the held-out samples' proxy, second-model and gold rewards; best-of-n once, at the start."""
  cfg, k = run.config, run.config.eval.samples
  examples = [ex for ex in run.eval_examples for _ in range(k)]
  scores = run.judges(examples, said, ended)
  out.update({f"eval/{name}": float(np.mean(v)) for name, v in scores.items()})
  if "proxy" in scores and "proxy2" in scores and np.std(scores["proxy"]) > 0 and np.std(scores["proxy2"]) > 0:
    # How far the two reward models agree on the policy's own replies (falls as one is exploited).
    out["eval/rm_agreement"] = float(np.corrcoef(scores["proxy"], scores["proxy2"])[0, 1])
  rlhf.log_samples(run.workdir, run.step, run.eval_examples, said, scores, k, cfg.eval.show)
  if cfg.eval.best_of_n and run.step == 0:
    n = cfg.eval.bon_prompts
    bon = rlhf.best_of_n(stage.model, params, run.tokenizer, run.mesh, stage.rules, run.eval_examples[:n],
                         run.eval_prompts[:n], run.judges, cfg.eval.best_of_n, cfg.eval.max_new_tokens,
                         cfg.rl.prompts_per_step, cfg.rl.temperature, run.workdir, seed=cfg.seed)
    out.update({f"eval/bon{bon['n'][-1]}_{name}": bon[name][-1] for name in ("proxy", "gold") if name in bon})


def check_divergence(run: Run, step: int, pass1: float) -> None:
  """The training reward rising while held-out pass@1 falls: reward hacking or overfitting."""
  reward = float(np.mean(run.rewards_since_eval)) if run.rewards_since_eval else float("nan")
  run.rewards_since_eval.clear()
  if len(run.history) >= 2:  # compare this window with the previous one (the first has no reward)
    _, prev_reward, prev_pass1 = run.history[-1]
    m = run.config.eval.warn_margin
    if reward > prev_reward + m and pass1 < prev_pass1 - m:
      msg = (f"warning (step {step}): the training reward rose {prev_reward:.3f} → {reward:.3f} while held-out "
             f"pass@1 fell {prev_pass1:.3f} → {pass1:.3f}: the policy may be exploiting the reward or "
             "overfitting the training prompts")
      tqdm.write(msg)
      run.warnings.append(msg)
  run.history.append((step, reward, pass1))


def k_passes(run: Run, step_fn):
  """The stage's train step run `rl.passes` times on one rollout batch (timed: rollout vs update)."""
  def train_step(state, batch, rng):
    t = time.perf_counter()
    for _ in range(run.config.rl.passes):
      state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready(metrics)
    run.timing["update"] += time.perf_counter() - t
    return state, metrics
  return train_step


def train_loop(run: Run) -> dict:
  cfg, rl = run.config, run.config.rl
  loss = lambda model: losses.grpo(model, clip_low=rl.clip_low, clip_high=rl.clip_high, kl_coef=rl.kl_coef,
                                   aggregation=rl.aggregation, max_new_tokens=rl.max_new_tokens)
  stage = loop.build_stage(cfg.model, cfg.opt, cfg.train.steps * rl.passes, run.mesh, sharding.rules(cfg), loss,
                           micro_batch=cfg.train.batch_size // cfg.train.grad_accum, seq_len=cfg.train.seq_len,
                           grad_accum=cfg.train.grad_accum, forward=losses.token_logprobs)
  stage = dataclasses.replace(stage, train_step=k_passes(run, stage.train_step))
  start_params = lambda: init_from.load_params(run.source, cfg.model, stage.abstract_state().params)
  ref = reference(run, stage, start_params)
  keys = grpo.forward_keys(rl)
  rollouts = grpo.Rollouts(stage.model, run.tokenizer, run.mesh, stage.rules, stage.forward_step,
                           reward_of(run), rl.group, rl.max_new_tokens, cfg.train.seq_len, rl.temperature,
                           rl.scale_by_std, rl.drop_no_signal, run.tools, cfg.tools.max_tool_tokens,
                           ref_params=ref if keys["ref_logprobs"] else None, old_logprobs=keys["old_logprobs"],
                           batch_reward=rm_reward(run))
  prompts_it = prompt_iterator(len(run.train_prompts), rl.prompts_per_step, cfg.seed)
  warned_at = [-10**9]

  def batch_for(state, step):
    idx = np.asarray(next(prompts_it)).tolist()
    examples = [run.train_examples[i] for i in idx]
    seed = int(jax.random.randint(jax.random.fold_in(jax.random.key(cfg.seed), step), (), 0, 2**31 - 1))
    batch, info, _ = rollouts(state.params, examples, [run.train_prompts[i] for i in idx], seed)
    run.step = step + 1
    run.timing["rollout"] += info["rollout/seconds"]
    run.rewards_since_eval.append(info["rollout/reward"])
    total = run.timing["rollout"] + run.timing["update"]
    info["perf/rollout_share"] = run.timing["rollout"] / total if total else float("nan")
    if info["rollout/truncated"] > rl.truncation_warning and step - warned_at[0] >= 10:
      warned_at[0] = step
      msg = (f"warning (step {step}): {info['rollout/truncated']:.0%} of completions hit rl.max_new_tokens="
             f"{rl.max_new_tokens} and score as cut; raise it if answers need the room")
      tqdm.write(msg)
      if len(run.warnings) < 20:
        run.warnings.append(msg)
    return batch, info

  hooks = loop.Hooks(
      batches=prompts_it, tokens_in=lambda b: 0, batch_for=batch_for,
      evaluate=lambda params: evaluate(run, stage, params, ref),
      init_params=start_params if ref is None else (lambda: jax.tree.map(jnp.copy, ref)),
      train_metrics=("loss", "kl", "entropy", "clip_fraction", "ratio"),
      title="GRPO", report_sections=lambda final: report_sections(run, final))
  return loop.run(stage, cfg, run.workdir, run.tokenizer, hooks)


PANELS = (("held-out accuracy", ("eval/pass@1", "eval/greedy_{task}/accuracy")),
          ("training reward", ("rollout/reward",)),
          ("response length (tokens)", ("eval/length_correct", "eval/length_wrong", "rollout/response_tokens")),
          ("KL to reference / entropy", ("train/kl", "eval/kl", "train/entropy")))


def report_sections(run: Run, final: dict) -> str:
  task = run.config.eval.tasks.split(",")[0]
  panels = [(title, tuple(k.format(task=task) for k in keys)) for title, keys in PANELS]
  plot = report.curves(run.workdir, panels, "grpo_curves.png")
  rows = [r for r in read_metrics(run.workdir) if "eval/pass@1" in r]
  lines = ["## Held-out evaluation over training", "",
           "| step | pass@1 | pass@k | greedy | length correct | length wrong |", "|---|---|---|---|---|---|"]
  k = run.config.eval.samples

  def cell(r, key, spec):
    v = r.get(key)
    return "–" if v is None or v != v else format(v, spec)

  for r in rows:
    lines.append(f"| {r['step']} | " + " | ".join(
        cell(r, key, spec) for key, spec in (("eval/pass@1", ".3f"), (f"eval/pass@{k}", ".3f"),
                                             (f"eval/greedy_{task}/accuracy", ".3f"),
                                             ("eval/length_correct", ".1f"), ("eval/length_wrong", ".1f"))) + " |")
  if plot:
    lines += ["", f"![GRPO curves]({os.path.basename(plot)})"]
  total = run.timing["rollout"] + run.timing["update"]
  if total:
    lines += ["", f"Time per iteration (this process): rollout {run.timing['rollout'] / total:.0%}, "
                  f"update {run.timing['update'] / total:.0%} (rollout: sampling, reward and rows; update: "
                  "the old/reference log-prob forwards, when used, and the optimizer steps)."]
  if run.judges is not None:
    lines += ["", rlhf.section(run.workdir, run.config.reward.stop_patience, run.config.reward.stop_drop)]
  if run.warnings:
    lines += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
  return "\n".join(lines)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return train_loop(setup(config, workdir))


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")

if __name__ == "__main__":
  cli.run(lambda: setup(_CONFIG.value, _WORKDIR.value), train_loop)
