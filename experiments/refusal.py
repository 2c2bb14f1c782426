"""The refusal recipe: probe an SFT model on every fact, refuse where it is consistently wrong, run the SFT again.

  python -m experiments.refusal --config=configs/refusal.py:tiny --workdir=runs/refusal \\
      --config.init_from.workdir=runs/base --config.refusal.probe=runs/sft
  python -m experiments.refusal --collect=runs/refusal/seed=0,runs/refusal/seed=1,runs/refusal/seed=2
  python -m experiments.refusal --abstain=runs/refusal/seed=0,runs/refusal/seed=1,runs/refusal/seed=2
  python -m experiments.refusal --readout=runs/refusal/seed=0,runs/refusal/seed=1,runs/refusal/seed=2

1. Probe (`lm.refusal.probe`): every fact of the world task's training entities,
   exposure 0 included, asked once and answered `refusal.samples` times at
   temperature 1 by the model of `refusal.probe` (an SFT run); written to
   <workdir>/refusal/probe.jsonl. Facts with at most `refusal.max_correct` right
   answers are "unknown". The same model answers the held-out questions greedily:
   refusal/before.json, the "before" of the report.
   That model was fine-tuned on the very facts it is probed on, so it "knows" nearly
   all that its SFT stated (facts seen once in pretraining: 77% right, 2.5% unknown)
   and only never-stated facts come out unknown. `refusal.fold_probes` = "A,B"
   cross-fits the probe instead: A and B are SFT runs of the same recipe on one
   half of the train entities each (`--config.tasks.world.train_fold=a` / `b`), and
   each answers the other half's facts, which it never saw in SFT: what the base
   knows, as Llama 3 probes facts from pretraining data the SFT never stated.
2. Data: `data.examples_per_task` world conversations over those facts (answer
   if known, a refusal in varied wording if not) in
   <workdir>/refusal/conversations.jsonl, replacing the `world` source of the
   SFT mix (arithmetic and spelling stay). With `refusal.made_up` = M, questions
   about M people who do not exist (never in any text) are mixed in, refused.
3. SFT from `init_from` (the base the probed model started from, same steps and
   schedule: experiments/sft.py's loop, with resume, checkpoints and metrics).
   Fine-tuning the probed model again instead overwrote what pretraining stored
   (facts seen 8+ times: 0.585 → 0.431 at lr 1e-4 after 100 steps, → 0.169 at 5e-5
   with made-up people). report.md gets the probe's table and, per fact exposure,
   accuracy, refusal and hallucination (neither right nor a refusal) before and
   after, with refusal.png.

--collect writes refusal_seeds.md (+ .json) beside the runs: each figure before and
after as mean ± std over the runs. --abstain=<runs> measures the alternative at
inference (`lm.refusal.abstain`: n replies at temperature 1, the most common answer
only if at least --abstain_share of them give it) for each run's probed model and its
recipe model: refusal/abstain.json per run and abstain_seeds.md beside them. --readout=<runs> asks whether
each run's probed model can tell what it knows (`lm.readout`: its greedy reply's own probability, a linear
probe of its state where the value is written, the asked name's familiarity, its samples' agreement), each
scored by the best it could do at the bar: refusal/readout.json and readout.png per run, readout_seeds.md
beside them. The probe's files are written once (atomically)
and reused on resume, so a resumed run trains on exactly the same conversations.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from experiments import sft
from lm import cli, evaluation, init_from, refusal, report, sharding
from lm import readout as readout_lib
from lm.errors import UserError
from lm.metrics import read_metrics
from lm.stage_outputs import read_jsonl, write_json
from lm.tasks.world import FOLDS, WorldTask

PROBE, CONVERSATIONS, BEFORE, BEFORE_ROWS = "probe.jsonl", "conversations.jsonl", "before.json", "before_eval.jsonl"


def validate(config) -> None:
  r = config.refusal
  if r.samples < 1 or r.batch < 1 or r.max_new_tokens < 1:
    raise UserError("config.refusal.samples, .batch and .max_new_tokens must be ≥ 1")
  if r.made_up < 0:
    raise UserError(f"config.refusal.made_up={r.made_up} must be ≥ 0")
  if r.style not in refusal.STYLES:
    raise UserError(f"config.refusal.style={r.style!r} is not one of {', '.join(refusal.STYLES)}")
  if not 0 <= r.max_correct < r.samples:
    raise UserError(f"config.refusal.max_correct={r.max_correct} must be in [0, refusal.samples={r.samples})")
  if not 0 <= r.prior < 1:
    raise UserError(f"config.refusal.prior={r.prior} must be a probability in [0, 1) (0: off)")
  if not 0 <= r.refusal_share < 1:
    raise UserError(f"config.refusal.refusal_share={r.refusal_share} must be a share in [0, 1) (0: as probed)")
  if not 0 <= r.min_agreement <= 1:
    raise UserError(f"config.refusal.min_agreement={r.min_agreement} must be a share in [0, 1] (0: off)")
  kinds = [kind for kind, _, _ in sft.parse_sources(config.data.sources)]
  if "world" not in kinds:
    raise UserError(f"config.data.sources={config.data.sources!r} has no 'world' source for the probed "
                    f"conversations to replace")
  for key in ("world", "exposures"):
    path = config.data[key]
    if path and not os.path.exists(path):
      raise UserError(f"config.data.{key}: no such file {path!r} (experiments.prepare_data / tokenize_data write it)")
  if "world" not in config.eval.tasks.split(","):
    raise UserError("config.eval.tasks must include 'world': the recipe is measured on held-out facts")
  if not r.probe or not os.path.isdir(os.path.join(r.probe, "checkpoints")):
    raise UserError(f"config.refusal.probe={r.probe!r}: not a training workdir with checkpoints/ (the SFT model "
                    f"to probe)")
  fold_probes(config)


def fold_probes(config) -> list[tuple[str, str]]:
  """[(workdir, fold it was fine-tuned on)] of `refusal.fold_probes` ("": []), each checked."""
  value = config.refusal.fold_probes
  if not value:
    return []
  workdirs = [w for w in value.split(",") if w]
  if len(workdirs) != len(FOLDS):
    raise UserError(f"config.refusal.fold_probes={value!r}: give {len(FOLDS)} SFT workdirs, comma-separated, "
                    f"trained with --config.tasks.world.train_fold={' and '.join(FOLDS)}")
  for workdir, fold in zip(workdirs, FOLDS):
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")) or not os.path.exists(path):
      raise UserError(f"config.refusal.fold_probes: {workdir!r} is not a training workdir with checkpoints/")
    with open(path) as f:
      trained = json.load(f).get("tasks", {}).get("world", {}).get("train_fold", "")
    if trained != fold:
      raise UserError(f"config.refusal.fold_probes: {path} has tasks.world.train_fold={trained!r}, expected "
                      f"{fold!r} (the workdirs are given in fold order {','.join(FOLDS)})")
  return list(zip(workdirs, FOLDS))


def _write_jsonl(path: str, rows) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
  os.replace(tmp, path)  # all or nothing: a killed probe leaves no half file to train on


def world_task(config, train_fold: str = "") -> WorldTask:
  return WorldTask(config.data.world or None, seed=config.data.world_seed, min_train_exposure=0,
                   exposures=config.data.exposures or None, train_fold=train_fold)


def _load(workdir: str, key: str, mesh, rules):
  spec = ml_collections.ConfigDict({"workdir": workdir, "hf_dir": "", "step": -1})
  return init_from.load_model(spec, mesh, rules, key={"workdir": key, "hf_dir": "-", "step": "-"})


def probe_and_write(config, folder: str) -> None:
  """Steps 1 and 2 (skipped when their files exist: a resumed run reuses them)."""
  if os.path.exists(os.path.join(folder, CONVERSATIONS)):
    return
  r = config.refusal
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple(config.sharding_rules)
  task = world_task(config)
  # (model, the train facts it answers): the probed SFT model on all of them, or each fold's on the other fold's
  probes = [(r.probe, "config.refusal.probe", task)]
  if r.fold_probes:
    probes = [(workdir, "config.refusal.fold_probes", world_task(config, other_fold))  # the folds swapped
              for (workdir, _), other_fold in zip(fold_probes(config), reversed(FOLDS))]
  rows = []
  for i, (workdir, key, facts) in enumerate(probes):
    probed = _load(workdir, key, mesh, rules)
    examples = facts.examples("train", None, config.seed)
    print(f"refusal: {workdir} answers {len(examples)} facts × {r.samples}", flush=True)
    answered = refusal.probe(probed.model, probed.params, probed.tokenizer, facts, examples, samples=r.samples,
                             max_new_tokens=r.max_new_tokens, batch=r.batch, seed=config.seed * 1_000_003 + i,
                             mesh=mesh, rules=rules)
    rows += [{**row, "probed_by": workdir} for row in answered]
  loaded = probed if not r.fold_probes else _load(r.probe, "config.refusal.probe", mesh, rules)
  unknown = refusal.mark_unknown(rows, r.max_correct, r.min_agreement)
  for row in rows:
    row["unknown"] = refusal.fact_key(row) in unknown
  convs = refusal.conversations(task, unknown, config.data.examples_per_task, config.seed, r.made_up, r.style,
                                r.refusal_share, r.prior)
  # "Before": the probed model on the held-out questions this run's evaluation asks (every held-out
  # fact: the split does not depend on min_train_exposure), in the same way.
  held = task.examples("eval")
  before_rows = evaluation.run_tasks(loaded.model, loaded.params, loaded.tokenizer, held, task.reward,
                                     max_new_tokens=config.eval.max_new_tokens, mesh=mesh, rules=rules)
  os.makedirs(folder, exist_ok=True)
  _write_jsonl(os.path.join(folder, BEFORE_ROWS), before_rows)
  with open(os.path.join(folder, BEFORE), "w") as f:
    json.dump({"probe": r.probe, **evaluation.summarize(before_rows)}, f, indent=1)
  _write_jsonl(os.path.join(folder, PROBE), rows)
  _write_jsonl(os.path.join(folder, CONVERSATIONS), [{"messages": c} for c in convs])
  print(f"refusal: {len(unknown)} of {len(rows)} facts unknown → refusals", flush=True)


def setup(config: ml_collections.ConfigDict, workdir: str):
  validate(config)
  sft.validate(config)
  folder = os.path.join(os.path.abspath(workdir), "refusal")
  if init_from.own_checkpoint(workdir) is None:  # a resumed run trains on the files it already has
    probe_and_write(config, folder)
  elif not os.path.exists(os.path.join(folder, CONVERSATIONS)):
    raise UserError(f"{workdir}: has checkpoints but no refusal/{CONVERSATIONS}; use a new workdir")
  path = os.path.join(folder, CONVERSATIONS)
  with config.unlocked():
    config.data.sources = ",".join(
        f"messages:{path}*{w:g}" if kind == "world" else f"{kind}{':' + p if p else ''}*{w:g}"
        for kind, p, w in sft.parse_sources(config.data.sources))
  return sft.setup(config, workdir), folder


def report_section(workdir: str, folder: str, made_up: int) -> str:
  """The probe's table and, per exposure, before (the probed model, refusal/before.json) vs after (this
  run's last evaluation)."""
  with open(os.path.join(folder, PROBE)) as f:
    rows = [json.loads(line) for line in f]
  unknown = {refusal.fact_key(r) for r in rows if r["unknown"]}
  by = sorted({r["probed_by"] for r in rows if "probed_by" in r})
  who = (f" (cross-fitted: {' and '.join(by)}, each fine-tuned on one half of the training entities, answer "
         f"the other half's facts)" if len(by) > 1 else "")
  lines = ["## The refusal recipe", "", f"Probe: {len(rows)} facts of the training entities{who}, "
           f"{rows[0]['samples']} answers each at temperature 1; {len(unknown)} marked unknown; refusals also "
           f"for the {4 * made_up} facts of {made_up} made-up people (config.refusal.made_up).", ""]
  lines += refusal.probe_table(rows, unknown)
  evals = evaluation_rows(workdir)
  if evals and evals[-1]["step"] > 0:
    with open(os.path.join(folder, BEFORE)) as f:
      before = json.load(f)
    after = evals[-1]
    lines += ["", f"Held-out facts (entities never in SFT data), greedy: the probed model "
              f"({before['probe']}, before) → this run at step {after['step']} (after)", "",
              "| seen in pretraining | accuracy | refused | hallucinated |", "|---|---|---|---|"]
    for _, _, name in evaluation.EXPOSURE_BUCKETS + ((None, None, None),):
      k = f"eval/world/seen_{name}" if name else "eval/world"
      if f"{k}/accuracy" not in before:
        continue
      cells = [f"{before.get(f'{k}/{m}', float('nan')):.3f} → {after.get(f'{k}/{m}', float('nan')):.3f}"
               for m in ("accuracy", "refused", "hallucinated")]
      lines.append(f"| {name or 'all'} | " + " | ".join(cells) + " |")
    plot(before, after, os.path.join(workdir, "refusal.png"))
    lines += ["", "![before and after](refusal.png)"]
  return "\n".join(lines)


def evaluation_rows(workdir: str) -> list[dict]:
  return [r for r in read_metrics(workdir) if "eval/world/accuracy" in r]


def plot(before: dict, after: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [n for _, _, n in evaluation.EXPOSURE_BUCKETS if f"eval/world/seen_{n}/accuracy" in before]
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
  for ax, metric in zip(axes, ("accuracy", "refused", "hallucinated")):
    for label, row, dx in (("before", before, -0.2), ("after", after, 0.2)):
      ax.bar([i + dx for i in range(len(names))], [row.get(f"eval/world/seen_{n}/{metric}", 0) for n in names],
             width=0.4, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_title(metric)
    ax.set_xlabel("times the fact appeared in pretraining")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def train_loop(prepared) -> dict:
  run, folder = prepared
  return sft.train_loop(run, extra_sections=lambda: report_section(run.workdir, folder, run.config.refusal.made_up))


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return train_loop(setup(config, workdir))


def finished_run(workdir: str, flag: str) -> tuple[dict, dict]:
  """(refusal/before.json, the last evaluation after training) of a finished run, else one clear error."""
  path = os.path.join(workdir, "refusal", BEFORE)
  evals = evaluation_rows(workdir) if os.path.exists(os.path.join(workdir, "config.json")) else []
  if not os.path.exists(path) or not evals or evals[-1]["step"] == 0:
    raise UserError(f"{flag}: {workdir} is not a finished experiments.refusal run (no config.json, "
                    f"refusal/{BEFORE} or evaluation after training)")
  with open(path) as f:
    return json.load(f), evals[-1]


def collect(workdirs: list[str]) -> str:
  """refusal_seeds.md/.json beside the runs: before (the probed models) and after, mean ± std over runs."""
  befores, afters = [], []
  for wd in workdirs:
    before, after = finished_run(wd, "--collect")
    befores.append(before)
    afters.append(after)
  lines, summary = refusal.seed_table(befores, afters)
  return report.write_seed_table(
      workdirs, "refusal_seeds", "The refusal recipe over seeds",
      f"Runs: {', '.join(workdirs)}. Held-out facts, greedy; before = the probed SFT model, after = the SFT with "
      f"refusals; mean ± std over {len(workdirs)} runs (values per run in brackets).", lines, summary)


ABSTAIN = "abstain.json"
ABSTAIN_ROWS = (("never", "hallucinated"), ("never", "refused"), ("once", "hallucinated"), ("8+", "accuracy"),
                ("8+", "refused"), (None, "accuracy"), (None, "hallucinated"))


def abstain(workdirs: list[str], samples: int, min_share: float) -> str:
  """Abstention at inference (`lm.refusal.abstain`) on the held-out facts of each finished run, for the probed
  model (before) and the run's last checkpoint (after): <run>/refusal/abstain.json each (reused while n, the
  share and the run's last step are the same), and abstain_seeds.md
  (+ .json) beside the runs: greedy and abstaining, before and after, mean ± std over runs."""
  if samples < 1 or not 0 < min_share <= 1:
    raise UserError(f"--abstain_samples={samples} must be ≥ 1 and --abstain_share={min_share} in (0, 1]")
  results = []
  for wd in workdirs:
    before, after = finished_run(wd, "--abstain")
    out = os.path.join(wd, "refusal", ABSTAIN)
    previous = {}
    if os.path.exists(out):
      with open(out) as f:
        previous = json.load(f)
    key = {"samples": samples, "min_share": min_share, "step": after["step"]}  # what abstain.json is of
    if any(previous.get(k) != v for k, v in key.items()):
      with open(os.path.join(wd, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
      mesh, rules = sharding.make_mesh(config.mesh), tuple(tuple(r) for r in config.sharding_rules)
      task = world_task(config)
      held = task.examples("eval")
      summaries = {}
      for name, model_dir in (("before", config.refusal.probe), ("after", wd)):
        loaded = _load(model_dir, f"{wd}/config.json refusal.probe" if name == "before" else "--abstain", mesh, rules)
        rows = refusal.abstain(loaded.model, loaded.params, loaded.tokenizer, task, held, samples=samples,
                               min_share=min_share, max_new_tokens=config.refusal.max_new_tokens,
                               batch=config.refusal.batch, seed=config.seed * 1_000_003 + 7, mesh=mesh, rules=rules)
        summaries[name] = {k: v for k, v in evaluation.summarize(rows).items() if k.startswith("eval/world")}
      previous = {**key, **summaries}
      write_json(out, previous)
    results.append((before, previous["before"], after, previous["after"]))
  lines = ["| held-out facts seen | figure | before, greedy | before, abstaining | after, greedy | after, abstaining |",
           "|---|---|---|---|---|---|"]
  summary = {}
  for group, figure in ABSTAIN_ROWS:
    key = f"eval/world/seen_{group}/{figure}" if group else f"eval/world/{figure}"
    if not all(key in r for res in results for r in res):
      continue
    cols = [np.array([res[i][key] for res in results]) for i in range(4)]
    summary[key] = dict(zip(("before", "before_abstaining", "after", "after_abstaining"), (c.tolist() for c in cols)))
    lines.append(f"| {group or 'all'} | {figure} | " + " | ".join(map(refusal.spread_cell, cols)) + " |")
  return report.write_seed_table(
      workdirs, "abstain_seeds", "Abstaining when the model's own samples disagree",
      f"Runs: {', '.join(workdirs)}. Held-out facts; greedy = one reply at temperature 0; abstaining = {samples} "
      f"replies at temperature 1, the most common answer if at least {min_share:g} of them give it, else "
      f"\"{refusal.ABSTAIN_REPLY}\"; before = the probed model, after = the SFT with refusals; mean ± std over "
      f"{len(workdirs)} runs (values per run in brackets).", lines, summary)


READOUT = "readout.json"


def _finite(x):
  """JSON has no inf or NaN: None for them, recursively."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return None if isinstance(x, float) and not np.isfinite(x) else x


def readout(workdirs: list[str], samples: int) -> str:
  """Can the probed model tell what it knows (`lm.readout`)? For each run's probed model, on the held-out
  facts it answered greedily ("before"): each signal's values (the model passes; reused while n, the probe
  and the probe's files are the same), AUROC and best trade at the bar in <run>/refusal/readout.json, and
  readout.png with where the run's fine-tune landed once it has finished; readout_seeds.md (+ .json)
  beside the runs, mean ± std over runs."""
  if samples < 1:
    raise UserError(f"--readout_samples={samples} must be ≥ 1")
  results = []
  for wd in workdirs:
    folder = os.path.join(wd, "refusal")
    paths = [os.path.join(folder, name) for name in (BEFORE_ROWS, PROBE)]
    if not os.path.exists(os.path.join(wd, "config.json")) or not all(map(os.path.exists, paths)):
      raise UserError(f"--readout: {wd} has no probe yet (config.json, refusal/{BEFORE_ROWS} and refusal/{PROBE} "
                      f"are written before its SFT starts); run experiments.refusal there first")
    with open(os.path.join(wd, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    task = world_task(config)
    held, rows = task.examples("eval"), read_jsonl(paths[0])
    if [refusal.fact_key(r["meta"]) for r in rows] != [refusal.fact_key(ex.meta) for ex in held]:
      raise UserError(f"--readout: {paths[0]} does not answer this run's held-out facts in order ({len(rows)} rows "
                      f"for {len(held)} facts); its world or exposures changed since the probe ran")
    out = os.path.join(folder, READOUT)
    key = {"samples": samples, "probe": config.refusal.probe, "signals_read": list(readout_lib.SIGNALS),
           "files": [[os.path.getsize(p), os.path.getmtime(p)] for p in paths]}  # what the values are of
    got = {}
    if os.path.exists(out):
      with open(out) as f:
        got = json.load(f)
    if any(got.get(k) != v for k, v in key.items()):
      mesh, rules = sharding.make_mesh(config.mesh), tuple(tuple(r) for r in config.sharding_rules)
      probed = _load(config.refusal.probe, f"{wd}/config.json refusal.probe", mesh, rules)
      print(f"readout: {config.refusal.probe} on {len(held)} held-out facts ({samples} samples each)", flush=True)
      values = readout_lib.signals(probed.model, probed.params, probed.tokenizer, task, held,
                                   [r["reply"] for r in rows], read_jsonl(paths[1]), samples=samples,
                                   max_new_tokens=config.refusal.max_new_tokens, batch=config.refusal.batch,
                                   seed=config.seed * 1_000_003 + 11, mesh=mesh, rules=rules)
      got = {**key, "values": {name: v.tolist() for name, v in values.items()}}
    values = {name: np.array([np.nan if x is None else x for x in got["values"][name]], np.float64)
              for name in readout_lib.SIGNALS}
    got["before"] = readout_lib.trade(np.zeros(len(rows)), rows, -np.inf)
    got["scores"] = {name: {"auroc": readout_lib.auroc(v, rows), "no_score": int(np.isnan(v).sum()),
                            **readout_lib.bar_trade(v, rows)} for name, v in values.items()}
    got.pop("after", None)
    try:  # a finished run: where its own fine-tune landed, beside what each signal could do
      _, after = finished_run(wd, "--readout")
      got["after"] = {"never_hallucinated": after["eval/world/seen_never/hallucinated"],
                      "8+_accuracy": after["eval/world/seen_8+/accuracy"]}
    except UserError:
      pass
    readout_lib.plot({name: readout_lib.curve(v, rows) for name, v in values.items()}, got["before"],
                     os.path.join(folder, "readout.png"), after=got.get("after"))
    got = _finite(got)
    write_json(out, got)
    results.append(got)
  cell = lambda xs: refusal.spread_cell(np.array([np.nan if x is None else x for x in xs], np.float64))  # noqa: E731
  lines = ["| signal | passes | AUROC: 8+ right above never-seen wrong | never-seen hallucinated | 8+ accuracy | "
           "8+ declined or refused | halves for < 5 points |", "|---|---|---|---|---|---|---|",
           f"| none (greedy) | 1 | | {cell([r['before']['never_hallucinated'] for r in results])} | "
           f"{cell([r['before']['8+_accuracy'] for r in results])} | | |"]
  summary = {"before": [r["before"] for r in results]}
  if all("after" in r for r in results):  # where the recipe's own fine-tune landed, for comparison
    summary["after"] = [r["after"] for r in results]
    lines.append(f"| the recipe's fine-tune (greedy, after) | 1 | | "
                 f"{cell([r['after']['never_hallucinated'] for r in results])} | "
                 f"{cell([r['after']['8+_accuracy'] for r in results])} | | |")
  for name in readout_lib.SIGNALS:
    got = [r["scores"][name] for r in results]
    summary[name] = got
    lines.append(f"| {name} | {readout_lib.PASSES[name].format(samples=samples)} | "
                 + " | ".join(cell([g[k] for g in got]) for k in ("auroc", "never_hallucinated", "8+_accuracy",
                                                                   "8+_declined"))
                 + f" | {sum(g['halves'] for g in got)} of {len(got)} |")
  return report.write_seed_table(
      workdirs, "readout_seeds", "Can the probed model tell what it knows?",
      f"Runs: {', '.join(workdirs)}. Held-out facts; each run's probed model (its greedy replies as the run "
      f"recorded them). A signal declines the facts where it is lowest, at the threshold that removes the most "
      f"never-seen hallucination for under 5 points of 8+ accuracy, chosen on these very facts (an upper bound); "
      f"lm/readout.py says what each signal reads. mean ± std over {len(workdirs)} runs.", lines, summary)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")
  _COLLECT = flags.DEFINE_list("collect", None, "Finished runs' workdirs: write their table over seeds instead.")
  _ABSTAIN = flags.DEFINE_list("abstain", None, "Finished runs' workdirs: evaluate abstention at inference on "
                               "them (before and after) and write its table over seeds instead.")
  # 32 replies at 0.3: never-seen hallucination halved for 1.5 points of 8+ accuracy (README, Hallucination).
  _ABSTAIN_SAMPLES = flags.DEFINE_integer("abstain_samples", 32, "--abstain: replies per question at temperature 1.")
  _ABSTAIN_SHARE = flags.DEFINE_float("abstain_share", 0.3, "--abstain: the most common answer's share needed "
                                      "to give it (else abstain).")
  _READOUT = flags.DEFINE_list("readout", None, "Runs' workdirs (probed, finished or not): measure what their "
                               "probed model can tell of its own knowledge (lm/readout.py) and write the table.")
  _READOUT_SAMPLES = flags.DEFINE_integer("readout_samples", 32, "--readout: replies per question for the "
                                          "agreement signal.")

  def prepare():
    if _COLLECT.value or _ABSTAIN.value or _READOUT.value:
      return None
    if _CONFIG.value is None or not _WORKDIR.value:
      raise UserError("--config and --workdir are required (or --collect=<runs>)")
    return setup(_CONFIG.value, _WORKDIR.value)

  def go(prepared):
    if prepared is not None:
      return train_loop(prepared)
    if _ABSTAIN.value:
      return abstain(_ABSTAIN.value, _ABSTAIN_SAMPLES.value, _ABSTAIN_SHARE.value)
    if _READOUT.value:
      return readout(_READOUT.value, _READOUT_SAMPLES.value)
    return collect(_COLLECT.value)

  cli.run(prepare, go, required=())
