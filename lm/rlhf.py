"""RLHF's measurements inside the GRPO stage: the judges of a reply, best-of-n, and the report section.

experiments/grpo.py runs RLHF when `reward.kind='model'`: the training reward is a
reward model (lm/reward_model.Scorer) instead of the task's verifier, and the KL
penalty to the reference is in the loss (`rl.kl_coef` > 0). At every evaluation the
held-out samples are judged three ways (`Judges`):

  proxy    the reward model being optimised
  proxy2   a second reward model trained on other rankings (`reward.stop_workdir`): the
           early-stopping rules read it (its peak; its agreement with the proxy on the
           policy's samples, eval/rm_agreement), never a gold label
  gold     the hidden gold preference (lm/gold.py) that produced the rankings: measurement only

together with the KL from the reference per reply. Best-of-n against the proxy is
measured once, on `eval.best_of_n` samples per held-out prompt from the starting
policy (<workdir>/best_of_n.json). `section` writes the report's over-optimisation
part: the table against √KL, the Gao et al. fits (lm/overopt.py), the plot, the
stopping rule's step against the gold optimum, and sampled replies before RLHF, at
the chosen stop and at the end.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from lm import chat_template, gold, grpo, overopt, reward_model
from lm.errors import UserError
from lm.metrics import read_metrics

BON_FILE = "best_of_n.json"
SAMPLES_FILE = "eval_samples.jsonl"


REWARD_KINDS = ("task", "model")


def validate(config) -> None:
  """The GRPO config's `reward` block and RLHF's evaluation keys."""
  r = config.reward
  if r.kind not in REWARD_KINDS:
    raise UserError(f"config.reward.kind: {r.kind!r} is not one of {', '.join(REWARD_KINDS)}")
  if r.kind == "model" and not r.workdir:
    raise UserError("config.reward.workdir: reward.kind='model' needs a reward model's workdir "
                    "(experiments.reward_model)")
  if r.kind == "task" and (r.workdir or r.stop_workdir):
    raise UserError("config.reward.workdir / stop_workdir are read only with reward.kind='model'")
  if r.gold and [n for n in config.eval.tasks.split(",") if n] != ["world"]:
    raise UserError("config.reward.gold: the gold labeller (lm/gold.py) judges world questions; set "
                    "eval.tasks='world'")
  if config.eval.best_of_n and (r.kind != "model" or config.eval.best_of_n < 2):
    raise UserError("config.eval.best_of_n: needs reward.kind='model' and at least 2 samples (0: off)")
  if r.seq_len < 8:
    raise UserError(f"config.reward.seq_len={r.seq_len}: must be ≥ 8")
  if r.batch_size < 1:
    raise UserError(f"config.reward.batch_size={r.batch_size}: must be ≥ 1")
  if r.kind == "model" and config.rl.kl_coef == 0 and not config.rl.measure_kl:
    raise UserError("config.rl.kl_coef: RLHF measures reward against KL from the start; set rl.kl_coef > 0 "
                    "or rl.measure_kl=True")
  if config.eval.best_of_n and config.eval.bon_prompts < 1:
    raise UserError(f"config.eval.bon_prompts={config.eval.bon_prompts}: best-of-n needs at least 1 prompt")
  if r.stop_patience < 1:
    raise UserError(f"config.reward.stop_patience={r.stop_patience}: must be ≥ 1 evaluation")
  if r.stop_drop < 0:
    raise UserError(f"config.reward.stop_drop={r.stop_drop}: must be ≥ 0")


def make_judges(config, mesh, rules, tok, task_objs) -> "Judges | None":
  """The reward model (the training reward), the stopping rule's second one and the gold labeller;
  None when the config uses none of them."""
  r = config.reward
  if r.kind != "model" and not r.gold:
    return None
  scorer = lambda workdir, step, names: reward_model.load_scorer(
      workdir, step, mesh, rules, seq_len=r.seq_len, batch_size=r.batch_size, policy_tok=tok, names=names)
  second = {"workdir": "config.reward.stop_workdir", "step": "config.reward.stop_workdir (its newest checkpoint)"}
  return Judges(proxy=scorer(r.workdir, r.step, None) if r.kind == "model" else None,
                proxy2=scorer(r.stop_workdir, -1, second) if r.stop_workdir else None,
                gold_task=task_objs["world"] if r.gold else None)


@dataclasses.dataclass
class Judges:
  proxy: Any = None            # Scorer: the training reward
  proxy2: Any = None           # Scorer: the stopping rule's second reward model
  gold_task: Any = None        # the world task whose verifier the gold score uses

  def __call__(self, examples: Sequence[Any], texts: Sequence[str], ended: Sequence[bool]) -> dict[str, np.ndarray]:
    prompts = [ex.messages for ex in examples]
    out = {}
    if self.proxy is not None:
      out["proxy"] = self.proxy(prompts, texts)
    if self.proxy2 is not None:
      out["proxy2"] = self.proxy2(prompts, texts)
    if self.gold_task is not None:
      out["gold"] = np.array([gold.score(t, e, ex, self.gold_task) for t, e, ex in zip(texts, ended, examples)],
                             np.float32)
    return out


def best_of_n(model, params, tok, mesh, rules, examples, prompts, judges: Judges, m: int, max_new_tokens: int,
              batch: int, temperature: float, workdir: str, seed: int = 0) -> dict:
  """m samples per prompt from `params` (the start), judged; best-of-n for n = 1, 2, 4, …, m (and m)
  written to <workdir>/best_of_n.json together with the start's per-sample spread."""
  path = os.path.join(workdir, BON_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  scores: dict[str, list] = {}
  for start, n, _, ro in grpo.sampled_chunks(model, params, tok, prompts, batch, m, max_new_tokens,
                                             seed=2_000_003 + 1_000 * seed, mesh=mesh, rules=rules,
                                             temperature=temperature):
    chunk = list(examples[start:start + n])
    texts, ended = zip(*(grpo.completion_text(ro, r, tok) for r in range(len(chunk) * m)))
    got = judges([ex for ex in chunk for _ in range(m)], texts, ended)
    for k, v in got.items():
      scores.setdefault(k, []).append(np.asarray(v).reshape(len(chunk), m))
  s = {k: np.concatenate(v) for k, v in scores.items()}
  ns = sorted({1, 2, 4, 8, 16, 32, 64, m} & set(range(1, m + 1)))
  curve = overopt.best_of_n(s["proxy"], s.get("gold", s["proxy"]), ns)
  out = {"n": [int(n) for n in ns], "kl": curve["kl"].tolist(), "proxy": curve["proxy"].tolist(),
         "prompts": len(examples), "samples": m,
         "std": {k: float(v.std()) for k, v in s.items()}, "mean": {k: float(v.mean()) for k, v in s.items()}}
  if "gold" in s:
    out["gold"] = curve["gold"].tolist()
  with open(path, "w") as f:
    json.dump(out, f)
  return out


def log_samples(workdir: str, step: int, examples, texts, scores: dict, per_prompt: int, show: int) -> None:
  """The first sampled reply of the first `show` held-out prompts, with its judges' scores."""
  with open(os.path.join(workdir, SAMPLES_FILE), "a") as f:
    for i in range(min(show, len(examples))):
      r = i * per_prompt
      f.write(json.dumps({"step": step, "prompt": examples[i].messages[-1]["content"], "reply": texts[r],
                          **{k: round(float(v[r]), 4) for k, v in scores.items()}}, ensure_ascii=False) + "\n")


def curve_rows(workdir: str) -> list[dict]:
  """The evaluations that carry the judges, one per step (the last record of a step wins)."""
  by_step = {r["step"]: r for r in read_metrics(workdir) if "eval/proxy" in r and "eval/kl_reply" in r}
  return [by_step[s] for s in sorted(by_step)]


def analyse(rows: list[dict], bon: dict | None, patience: int, drop: float) -> dict:
  """Gains over the start, standardised by the start's per-sample spread; fits; the stopping rule."""
  steps = [r["step"] for r in rows]
  kl = np.array([max(r["eval/kl_reply"], 0.0) for r in rows])  # 0 at step 0: the start is the reference
  std = (bon or {}).get("std", {})
  out: dict[str, Any] = {"steps": steps, "kl": kl, "d": np.sqrt(kl)}
  for k in ("proxy", "gold", "proxy2"):
    if rows and f"eval/{k}" in rows[0]:
      raw = np.array([r[f"eval/{k}"] for r in rows])
      out[f"raw_{k}"] = raw
      out[k] = (raw - raw[0]) / (std.get(k) or 1.0)
  fits = {}
  if "gold" in out and len(rows) >= 3:
    fits["rl"] = overopt.fit_rl(out["d"], out["gold"])
  if bon and "gold" in bon:
    bon_gain = {"kl": np.array(bon["kl"]),
                "proxy": (np.array(bon["proxy"]) - bon["proxy"][0]) / (std.get("proxy") or 1.0),
                "gold": (np.array(bon["gold"]) - bon["gold"][0]) / (std.get("gold") or 1.0)}
    out["bon"] = bon_gain
    fits["bon"] = overopt.fit_bon(np.sqrt(bon_gain["kl"]), bon_gain["gold"])
  out["fits"] = fits
  if "proxy2" in out and steps:
    out["stop"], out["stop_fired"] = overopt.early_stop(steps, list(out["proxy2"]), patience)
  if steps and all("eval/rm_agreement" in r for r in rows):
    out["agreement"] = [r["eval/rm_agreement"] for r in rows]
    out["astop"], out["astop_fired"] = overopt.agreement_stop(steps, out["agreement"], drop)
  if "gold" in out and steps:
    out["gold_best_step"] = steps[int(np.argmax(out["raw_gold"]))]
  return out


def section(workdir: str, patience: int, drop: float) -> str:
  """The report's "Reward over-optimisation" section (and its PNG)."""
  rows = curve_rows(workdir)
  if not rows:
    return ""
  bon = None
  if os.path.exists(os.path.join(workdir, BON_FILE)):
    with open(os.path.join(workdir, BON_FILE)) as f:
      bon = json.load(f)
  a = analyse(rows, bon, patience, drop)
  lines = ["## Reward over-optimisation", "",
           "Held-out prompts, samples at the rollout temperature. KL: k3 estimate from the reference summed over a "
           "reply's tokens (nats per reply). proxy: the training reward model; proxy2: the second reward model "
           "(the stopping rule's, other rankings); gold: the hidden labeller (lm/gold.py, never seen in training).",
           "rm agreement: the correlation of the two reward models' scores over those samples.",
           "", "| step | KL/reply | √KL | proxy | proxy2 | gold | pass@1 | rm agreement |",
           "|---|---|---|---|---|---|---|---|"]
  cell = lambda r, k, f: format(r[k], f) if k in r else "–"
  for r, kl in zip(rows, a["kl"]):
    lines.append(f"| {r['step']} | {kl:.3f} | {np.sqrt(kl):.3f} | {cell(r, 'eval/proxy', '+.3f')} | "
                 f"{cell(r, 'eval/proxy2', '+.3f')} | {cell(r, 'eval/gold', '.3f')} | {cell(r, 'eval/pass@1', '.3f')} | "
                 f"{cell(r, 'eval/rm_agreement', '.3f')} |")
  if bon:
    lines += ["", f"Best-of-n against the proxy from the starting policy ({bon['samples']} samples on each of "
                  f"{bon['prompts']} held-out prompts; KL = log n − (n−1)/n):", "",
              "| n | KL | proxy | gold |", "|---|---|---|---|"]
    lines += [f"| {n} | {kl:.3f} | {p:+.3f} | " + (f"{g:.3f}" if "gold" in bon else "–") + " |"
              for n, kl, p, g in zip(bon["n"], bon["kl"], bon["proxy"], bon.get("gold", bon["proxy"]))]
  fits = a["fits"]
  if fits:
    lines += ["", "Fits of the gold gain (standardised by the start's per-sample spread) with d = √KL:"]
    if "rl" in fits:
      lines.append(f"- RL: R(d) = d(α − β log d), α = {fits['rl'][0]:.3f}, β = {fits['rl'][1]:.3f}")
    if "bon" in fits:
      lines.append(f"- best-of-n: R(d) = d(α − β d), α = {fits['bon'][0]:.3f}, β = {fits['bon'][1]:.3f}")
  marks = []
  rules = (("stop", f"the second reward model's held-out score peaks (patience {patience} evaluations)"),
           ("astop", f"the two reward models' agreement on the policy's samples falls {drop} below its start"))
  if any(key in a for key, _ in rules):
    lines += ["", "Early stopping (no gold labels):", ""]
  for key, what in rules:
    if key not in a:
      continue
    fired = a[f"{key}_fired"]
    i = a["steps"].index(a[key])
    gold_there = f", gold there {a['raw_gold'][i]:.3f}" if "gold" in a else ""
    lines.append(f"- {what}: chose step {a[key]} "
                 f"({'fired at step %d' % fired if fired is not None else 'never fired'}"
                 f"{gold_there})")
    marks.append((key, float(a["d"][i])))
  if "gold_best_step" in a:
    j = a["steps"].index(a["gold_best_step"])
    lines += ["", f"Gold: best {a['raw_gold'][j]:.3f} at step {a['gold_best_step']}; at the start "
                  f"{a['raw_gold'][0]:.3f}; at the end {a['raw_gold'][-1]:.3f}."]
  fits = dict(fits, marks=marks)
  png = overopt.plot(os.path.join(workdir, "overoptimisation.png"),
                     {k: a[k] for k in ("kl", "proxy", "gold", "proxy2") if k in a}, a.get("bon"), fits,
                     os.path.basename(os.path.abspath(workdir)))
  if png:
    lines += ["", f"![proxy and gold against √KL]({os.path.basename(png)})"]
  lines += examples(workdir, a.get("astop", a.get("stop")), a["steps"][-1])
  return "\n".join(lines)


def examples(workdir: str, stop: int | None, last: int) -> list[str]:
  path = os.path.join(workdir, SAMPLES_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    # A resumed run evaluates again the steps after its checkpoint: the last record of (step, prompt) wins.
    recs = list({(r["step"], r["prompt"]): r for r in map(json.loads, filter(str.strip, f))}.values())
  out = ["", "## Example replies (held-out prompts)"]
  for title, step in (("before RLHF", 0), ("at the chosen stop", stop), ("at the end", last)):
    chosen = [r for r in recs if r["step"] == step]
    if step is None or not chosen:
      continue
    out += ["", f"### {title} (step {step})", ""]
    for r in chosen:
      scores = ", ".join(f"{k} {r[k]:+.3f}" for k in ("proxy", "proxy2", "gold") if k in r)
      out.append(f"- {r['prompt']!r} → {r['reply']!r} ({scores})")
  return out


def sample_rankings(model, params, tok, mesh, rules, examples, task, k: int, max_new_tokens: int, batch: int,
                    seed: int):
  """Synthetic gold rankings (experiments/gold_rankings.py): k replies per example from the policy at
  temperature 1 (one prefill per question), ranked by the hidden gold labeller.

  → (records, stats): one ranked-JSONL record per example whose k replies do not all tie.
  """
  fmt = chat_template.OwnFormat(tok)
  records, ties, n_scores = [], 0, []
  prompts = [fmt.render_prompt(ex.messages).tolist() for ex in examples]
  for start, n, _, out in grpo.sampled_chunks(model, params, tok, prompts, batch, k, max_new_tokens,
                                              seed=seed * 100_003, mesh=mesh, rules=rules, temperature=1.0):
    for i, ex in enumerate(examples[start:start + n]):
      replies = [grpo.completion_text(out, i * k + j, tok) for j in range(k)]
      scores = [gold.score(text, ended, ex, task) for text, ended in replies]
      n_scores += scores
      if len(set(np.round(scores, 6))) == 1:
        ties += 1
        continue
      records.append({"prompt": ex.messages, "responses": [t for t, _ in replies], "ranking": gold.ranking(scores),
                      "gold": [round(s, 4) for s in scores], "ended": [e for _, e in replies],
                      "meta": {"entity": ex.meta["entity"], "attribute": ex.meta["attribute"]}})
  return records, {"all_tied": ties, "mean_gold": float(np.mean(n_scores)) if n_scores else float("nan")}


def gold_pairs(scores) -> list[tuple[int, int]]:
  """The ordered pairs (better, worse) that gold scores imply (ties give none)."""
  return [(i, j) for i, a in enumerate(scores) for j, b in enumerate(scores) if a > b]
