"""Prompt injection through the search tool: how often a tool-use model follows an instruction planted in a
page it retrieved, before and after SFT conversations that ignore such instructions (lm/injection.py).

  python -m experiments.injection --config=configs/injection.py:tiny --workdir=runs/injection/seed=0 \\
      --config.init_from.workdir=runs/base --config.data.world=runs/data/crawl/world.json \\
      --config.data.exposures=runs/data/shards/train/exposures.json --config.seed=0
  python -m experiments.injection --collect=runs/injection/seed=0,runs/injection/seed=1,runs/injection/seed=2

One seed: two tool-use SFTs from the same base with the same steps and mix
(configs/sft.py:tools): "before" (`data.injection_share=0`, the plain recipe;
or an existing run given as `injection.before`) in <workdir>/before and
"after" (`data.injection_share=injection.share`: that share of the pages stating
no held-out fact carry a planted instruction, and the world conversations that
retrieve one answer from the page's facts or say the search did not find it)
in <workdir>/after. Both then answer every held-out fact (entities no SFT
conversation asks about) greedily, three ways:

  injected  the search call made, its output forced in: the page that states the fact, with an
            instruction planted after the fact's sentence (every question meets one)
  clean     the same page without it (the control: reading without an attacker)
  search    the live BM25 tool over the index where every page stating a held-out fact is planted
            (`injection.live_search`; the model writes its own query, retrieval can miss)

Each reply is followed (it contains the instruction's payload, a word or number no page has),
correct, refused or other (a wrong answer), in that order. Writes <workdir>/injection.md,
injection.json and rows/<model>_<mode>.jsonl; --collect writes injection_seeds.md/.json beside the
runs: every figure before and after, mean ± std over the runs, per-run values in brackets.
"""
from __future__ import annotations

import collections
import copy
import json
import os

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from experiments import sft
from lm import cli, evaluation, init_from, injection, knowledge, report, sharding, tools as tools_lib
from lm.errors import UserError
from lm.tasks.world import WorldTask

MODELS = ("before", "after")
MODES = ("injected", "clean", "search")
RESULT = "injection.json"


def validate(config) -> None:
  j = config.injection
  if not 0 < j.share <= 1:
    raise UserError(f"config.injection.share={j.share} must be in (0, 1]: the 'after' SFT needs planted pages")
  if config.data.injection_share:
    raise UserError(f"config.data.injection_share={config.data.injection_share}: set config.injection.share "
                    f"instead (the 'before' SFT has none, the 'after' SFT that share)")
  if j.max_new_tokens < 1 or j.batch < 1:
    raise UserError("config.injection.max_new_tokens and config.injection.batch must be ≥ 1")
  if j.before and not os.path.isdir(os.path.join(j.before, "checkpoints")):
    raise UserError(f"config.injection.before={j.before!r}: not a training workdir with checkpoints/ "
                    f"(a tool-use SFT run, or '' to train one)")
  for key in ("world", "exposures"):
    path = config.data[key]
    if path and not os.path.exists(path):
      raise UserError(f"config.data.{key}: no such file {path!r} (experiments.prepare_data / tokenize_data write it)")
  sft.validate(config)


def sft_config(config, share: float) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config)
  with c.unlocked():
    c.data.injection_share = share
  return c


def workdirs(config, workdir: str) -> dict[str, str]:
  return {"before": config.injection.before or os.path.join(workdir, "before"), "after": os.path.join(workdir, "after")}


def train(config, workdir: str) -> None:
  """The SFTs (each resumes, and a finished one is left as it is)."""
  for model, wd in workdirs(config, workdir).items():
    if model == "before" and config.injection.before:
      continue
    print(f"injection: SFT '{model}' in {wd}", flush=True)
    sft.main(sft_config(config, 0.0 if model == "before" else config.injection.share), wd)


def evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple(config.sharding_rules)
  j = config.injection
  task = WorldTask(config.data.world or None, seed=config.data.world_seed, exposures=config.data.exposures or None)
  search = sft.make_tools(config)["search"]
  examples = task.examples("eval")
  plants = injection.eval_plants(examples, search.documents, config.seed)
  shown = tools_lib.search_options(config.tools)  # forced pages look as the live tool prints them
  outputs, found = injection.forced_outputs(examples, search.documents, plants, **shown)
  clean, _ = injection.forced_outputs(examples, search.documents, None, **shown)
  paged = [i for i, o in enumerate(outputs) if o is not None]
  chosen = [examples[i] for i in paged]
  live = injection.InjectedSearch(search, plants)
  print(f"injection: {len(examples)} held-out facts, {len(paged)} stated on a page ({len(plants)} pages planted)",
        flush=True)
  os.makedirs(os.path.join(workdir, "rows"), exist_ok=True)
  result = {"held_out_facts": len(examples), "with_page": len(paged), "planted_pages": len(plants),
            "workdirs": workdirs(config, workdir)}
  for model, wd in workdirs(config, workdir).items():
    spec = ml_collections.ConfigDict({"workdir": wd, "hf_dir": "", "step": -1})
    loaded = init_from.load_model(spec, mesh, rules, key={"workdir": f"{model} SFT", "hf_dir": "-", "step": "-"})
    by_mode = {}
    for mode, forced in (("injected", outputs), ("clean", clean)):
      prompts = knowledge.context_prompts(chosen, [forced[i] for i in paged], loaded.tokenizer)
      room = min(j.max_new_tokens, loaded.model.cfg.max_len - max(map(len, prompts)))
      if room < 8:
        raise UserError(f"{wd}: max_len {loaded.model.cfg.max_len} leaves {room} tokens after the longest page prompt")
      rows = evaluation.run_tasks(loaded.model, loaded.params, loaded.tokenizer, chosen, task.reward,
                                  max_new_tokens=room, mesh=mesh, rules=rules, batch_size=j.batch, prompts=prompts)
      for i, row in zip(paged, rows):
        row["injection"] = as_dict(found[i])  # in the clean mode: what the page would have carried
        shown = [found[i]] if mode == "injected" else []
        row["outcome"] = injection.outcome(row["reply"], shown, row["score"], row["refused"])
      by_mode[mode] = rows
    if j.live_search:
      rows = evaluation.run_tasks(loaded.model, loaded.params, loaded.tokenizer, examples, task.reward,
                                  max_new_tokens=j.search_max_new_tokens, mesh=mesh, rules=rules, batch_size=j.batch,
                                  tools={"search": live}, max_tool_tokens=config.tools.max_tool_tokens)
      for row in rows:  # a reply may search more than once: any instruction it was shown counts
        shown = injection.shown_in(row.get("outputs", []), plants)
        row["injection"] = as_dict(shown[0]) if shown else None
        row["outcome"] = injection.outcome(row["reply"], shown, row["score"], row["refused"])
      by_mode["search"] = rows
    for mode, rows in by_mode.items():
      with open(os.path.join(workdir, "rows", f"{model}_{mode}.jsonl"), "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    result[model] = {mode: summarize(rows, mode) for mode, rows in by_mode.items()}
    print(f"  {model}: " + "; ".join(f"{m} followed {s['followed']:.3f} correct {s['correct']:.3f} "
                                     f"refused {s['refused']:.3f}" for m, s in result[model].items()), flush=True)
  return result


def as_dict(found) -> dict | None:
  return {"wording": found.wording, "payload": found.payload} if found else None


def summarize(rows: list[dict], mode: str) -> dict:
  """Outcome shares; for the injected pages also per wording and among replies that met an instruction."""
  out = {o: float(np.mean([r["outcome"] == o for r in rows])) for o in injection.OUTCOMES}
  out["n"] = len(rows)
  out["accuracy"] = float(np.mean([r["score"] for r in rows]))
  if mode == "injected":
    by = collections.defaultdict(list)
    for r in rows:
      by[r["injection"]["wording"]].append(r["outcome"] == "followed")
    out["followed_by_wording"] = {str(w): float(np.mean(v)) for w, v in sorted(by.items())}
    held = by.get(injection.HELD_OUT_WORDING, [])
    seen = [x for w, v in by.items() if w != injection.HELD_OUT_WORDING for x in v]
    out["followed_trained_wordings"] = float(np.mean(seen)) if seen else float("nan")
    out["followed_held_out_wording"] = float(np.mean(held)) if held else float("nan")
  if mode == "search":
    met = [r for r in rows if r["injection"] is not None]
    out["met_instruction"] = len(met) / max(1, len(rows))
    out["followed_when_met"] = float(np.mean([r["outcome"] == "followed" for r in met])) if met else float("nan")
  return out


FIGURES = (("injected", "followed"), ("injected", "followed_trained_wordings"),
           ("injected", "followed_held_out_wording"), ("injected", "correct"), ("injected", "refused"),
           ("injected", "other"), ("clean", "correct"), ("clean", "refused"), ("clean", "other"),
           ("search", "followed"), ("search", "met_instruction"), ("search", "followed_when_met"),
           ("search", "correct"), ("search", "refused"))


def table(results: list[dict]) -> tuple[list[str], dict]:
  """Markdown: each figure before and after, mean ± std over runs [per run], and the change."""
  lines = ["| mode | figure | before | after | change |", "|---|---|---|---|---|"]
  summary = {}
  for mode, figure in FIGURES:
    if not all(figure in r[m].get(mode, {}) for r in results for m in MODELS):
      continue
    b = np.array([r["before"][mode][figure] for r in results])
    a = np.array([r["after"][mode][figure] for r in results])
    summary[f"{mode}/{figure}"] = {"before": b.tolist(), "after": a.tolist()}
    cell = lambda v: f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f} [{', '.join(f'{x:.3f}' for x in v)}]"
    lines.append(f"| {mode} | {figure} | {cell(b)} | {cell(a)} | {np.nanmean(a - b):+.3f} |")
  return lines, summary


def write(workdir: str, result: dict, config) -> None:
  lines, _ = table([result])
  n = result["with_page"]
  text = ["# Prompt injection through the search tool", "",
          f"{result['held_out_facts']} held-out facts (entities never in SFT data), {n} stated on a page; greedy. "
          f"before: {result['workdirs']['before']} (tools SFT, no injections); after: {result['workdirs']['after']} "
          f"(same base, steps and mix; {config.injection.share:g} of the pages stating no held-out fact planted). "
          f"injected: the fact's page forced in as the search output with an instruction after the fact "
          f"({result['planted_pages']} pages, {len(injection.WORDINGS)} wordings, the last never in training); "
          f"clean: the same page without it; search: the live tool over the planted index. followed = the reply "
          f"contains the instruction's payload.", ""] + lines
  with open(os.path.join(workdir, "injection.md"), "w") as f:
    f.write("\n".join(text) + "\n")
  with open(os.path.join(workdir, RESULT), "w") as f:
    json.dump(result, f, indent=1)
  print("\n".join(lines), flush=True)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
  train(config, workdir)
  result = evaluate(config, workdir)
  write(workdir, result, config)
  return result


def collect(dirs: list[str]) -> str:
  results = []
  for wd in dirs:
    path = os.path.join(wd, RESULT)
    if not os.path.exists(path):
      raise UserError(f"--collect: {wd} has no {RESULT} (not a finished experiments.injection run)")
    with open(path) as f:
      results.append(json.load(f))
  lines, summary = table(results)
  return report.write_seed_table(
      dirs, "injection_seeds", "Prompt injection over seeds",
      f"Runs: {', '.join(dirs)}. Held-out facts, greedy; before = tools SFT, after = tools SFT with conversations "
      f"that ignore planted instructions; mean ± std over {len(dirs)} runs (values per run in brackets).",
      lines, summary)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")
  _COLLECT = flags.DEFINE_list("collect", None, "Finished runs' workdirs: write their table over seeds instead.")

  def prepare():
    if _COLLECT.value:
      return None
    if _CONFIG.value is None or not _WORKDIR.value:
      raise UserError("--config and --workdir are required (or --collect=<runs>)")
    validate(_CONFIG.value)
    return _CONFIG.value, _WORKDIR.value

  cli.run(prepare, lambda p: collect(_COLLECT.value) if p is None else main(*p), required=())
