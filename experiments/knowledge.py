"""Knowledge in context versus in weights: held-out facts answered from the weights, with the fact's page
in the context, and with the search tool; one table over seeds (lm/knowledge.py).

  python -m experiments.knowledge --weights=runs/sft --tools_model=runs/sft_tools \\
      --world=runs/data/crawl/world.json --exposures=runs/data/shards/train/exposures.json --out=runs/knowledge

  # 3 seeds, paired by position (each seed's SFT and tool-use SFT from the same base):
  python -m experiments.knowledge --weights=runs/sft/seed=0,runs/sft/seed=1,runs/sft/seed=2 \\
      --tools_model=runs/sft_tools/seed=0,runs/sft_tools/seed=1,runs/sft_tools/seed=2 ... --out=runs/knowledge

--weights is a plain SFT (configs/sft.py:tiny), --tools_model one that learnt to call
search (configs/sft.py:tools), both from the same base. Writes <out>/knowledge.md
(accuracy per pretraining exposure × mode, mean ± std over seeds), knowledge.json,
knowledge.png and <out>/rows/<seed>_<mode>.jsonl (every graded reply).
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import flags

from configs import base
from lm import cli, evaluation, init_from, knowledge, sharding, stage_outputs, tools as tools_lib
from lm.errors import UserError
from lm.tasks.world import WorldTask

_WEIGHTS = flags.DEFINE_list("weights", None, "SFT workdirs answering from their weights (one per seed).")
_TOOLS = flags.DEFINE_list("tools_model", None, "Tool-use SFT workdirs (configs/sft.py:tools), paired with --weights.")
_WORLD = flags.DEFINE_string("world", "", "world.json of the crawl the base models read ('': the world of seed 0 "
                             "and its pages).")
_EXPOSURES = flags.DEFINE_string("exposures", "", "exposures.json of the pretraining shards ('': by design).")
_FOLDER = flags.DEFINE_string("search_folder", "", "Pages the search tool indexes ('': <data>/clean/jsonl beside --world).")
_OUT = flags.DEFINE_string("out", None, "Folder for knowledge.md, knowledge.json, knowledge.png and the graded rows.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Reply budget (tool calls and outputs included: a search "
                                "output alone is ~60 tokens).")
_BATCH = flags.DEFINE_integer("batch", 64, "Questions per decoding call.")
_TOOL_TOKENS = flags.DEFINE_integer("max_tool_tokens", 0, "A search output's budget in tokens, cut beyond (0: each "
                                    "tool-use model's own config.tools.max_tool_tokens, what its SFT evaluated with).")


def check_flags() -> tuple[list[str], list[str], str, list[int], dict]:
  for name, flag in (("--weights", _WEIGHTS), ("--tools_model", _TOOLS), ("--out", _OUT)):
    if not flag.value:
      raise UserError(f"{name} is required")
  if len(_WEIGHTS.value) != len(_TOOLS.value):
    raise UserError(f"--weights has {len(_WEIGHTS.value)} workdirs and --tools_model {len(_TOOLS.value)}; "
                    f"pair them, one of each per seed")
  for path in _WEIGHTS.value + _TOOLS.value:
    if not os.path.isdir(os.path.join(path, "checkpoints")):
      raise UserError(f"{path}: no checkpoints/ (not a training workdir)")
  folder = _FOLDER.value or (_WORLD.value and os.path.join(os.path.dirname(os.path.dirname(_WORLD.value)),
                                                            "clean", "jsonl"))
  for name, path in (("--world", _WORLD.value), ("--exposures", _EXPOSURES.value), ("--search_folder", folder)):
    if path and not os.path.exists(path):
      raise UserError(f"{name}: no such file or folder {path!r}")
  trained = [trained_tools(t) for t in _TOOLS.value]
  budgets = [_TOOL_TOKENS.value or budget for budget, _ in trained]
  options = [o for _, o in trained]
  if any(o != options[0] for o in options):
    raise UserError(f"--tools_model: the runs searched with different snippets ({options}); compare runs "
                    f"trained with the same config.tools.search_snippet and search_chars")
  return _WEIGHTS.value, _TOOLS.value, folder, budgets, options[0]


def main() -> None:
  weights, tool_models, folder, budgets, search_options = check_flags()
  mesh = sharding.make_mesh(base.mesh_config())
  rules = tuple(base.SHARDING_RULES)
  task = WorldTask(_WORLD.value or None, exposures=_EXPOSURES.value or None)
  examples = task.examples("eval")
  search = tools_lib.for_conversation(["search"], search_folder=folder or None, **search_options)["search"]
  outputs = knowledge.oracle_outputs(examples, search.documents, **search_options)
  with_page = [i for i, o in enumerate(outputs) if o is not None]
  print(f"knowledge: {len(examples)} held-out facts, {len(with_page)} stated on some page; "
        f"{len(weights)} seed(s) × {len(knowledge.MODES)} modes", flush=True)
  reward = task.reward
  os.makedirs(os.path.join(_OUT.value, "rows"), exist_ok=True)
  per_seed = []
  for seed, (w, t, budget) in enumerate(zip(weights, tool_models, budgets)):
    by_mode = {}
    plain = load(w, mesh, rules)
    by_mode["weights"] = evaluation.run_tasks(plain.model, plain.params, plain.tokenizer, examples, reward,
                                              max_new_tokens=_MAX_NEW.value, mesh=mesh, rules=rules,
                                              batch_size=_BATCH.value)
    tooled = load(t, mesh, rules)
    chosen = [examples[i] for i in with_page]
    prompts = knowledge.context_prompts(chosen, [outputs[i] for i in with_page], tooled.tokenizer)
    # The page is already in the prompt: the reply's budget is what the context window has left.
    room = min(_MAX_NEW.value, tooled.model.cfg.max_len - max(map(len, prompts)))
    if room < 8:
      raise UserError(f"{t}: max_len {tooled.model.cfg.max_len} leaves {room} tokens after the longest page prompt")
    by_mode["context"] = evaluation.run_tasks(tooled.model, tooled.params, tooled.tokenizer, chosen, reward,
                                              max_new_tokens=room, mesh=mesh, rules=rules,
                                              batch_size=_BATCH.value, prompts=prompts)
    by_mode["search"] = evaluation.run_tasks(tooled.model, tooled.params, tooled.tokenizer, examples, reward,
                                             max_new_tokens=_MAX_NEW.value, mesh=mesh, rules=rules,
                                             batch_size=_BATCH.value, tools={"search": search},
                                             max_tool_tokens=budget)
    for mode, rows in by_mode.items():
      with open(os.path.join(_OUT.value, "rows", f"{seed}_{mode}.jsonl"), "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
      print(f"  seed {seed} {mode}: accuracy {np.mean([r['score'] for r in rows]):.3f} on {len(rows)}", flush=True)
    per_seed.append(by_mode)
  lines, summary = knowledge.table(per_seed)
  def final(workdir: str) -> dict:  # the last evaluation's graded rows (eval.jsonl), else its metrics
    rows = stage_outputs.read_jsonl(os.path.join(workdir, "eval.jsonl"))
    if rows:
      return evaluation.summarize(rows)
    return {k: v for r in stage_outputs.metrics(workdir) for k, v in r.items() if k.startswith("eval/")}
  task_lines, task_summary = knowledge.tool_task_table([final(w) for w in weights], [final(t) for t in tool_models])
  summary["tool_tasks"] = task_summary
  write(lines, summary, weights, tool_models, len(examples), len(with_page), task_lines, sorted(set(budgets)),
        search_options)


def trained_tools(workdir: str) -> tuple[int, dict]:
  """The tool-output budget and search options the tool-use run at `workdir` trained and evaluated
  with (its config.json)."""
  cfg = tools_lib.trained_with(workdir)
  if "max_tool_tokens" not in cfg and not _TOOL_TOKENS.value:
    raise UserError(f"{workdir}: its config.json has no tools.max_tool_tokens (not a tool-use SFT run?); "
                    f"give --max_tool_tokens")
  return int(cfg.get("max_tool_tokens", 0)), tools_lib.search_options(cfg, key=f"{workdir}/config.json: tools")


def load(workdir: str, mesh, rules):
  spec = ml_collections.ConfigDict({"workdir": workdir, "hf_dir": "", "step": -1})
  return init_from.load_model(spec, mesh, rules, key={"workdir": "--weights/--tools_model", "hf_dir": "-",
                                                      "step": "-"})


def write(lines, summary, weights, tool_models, n_facts, n_with_page, task_lines=(), budgets=(),
          search_options=None) -> None:
  search_options = search_options or tools_lib.search_options(None)
  out = _OUT.value
  text = ["# Knowledge in the weights versus in the context", "",
          f"{n_facts} held-out facts (entities never in SFT data), greedy; accuracy, mean ± std over "
          f"{len(weights)} seed(s). weights: {', '.join(weights)}; tool-use: {', '.join(tool_models)}. "
          f"context: the page that states the fact forced in as the search output ({n_with_page} facts have one; "
          f"facts never stated have none); search: the live BM25 tool (its output cut at "
          f"{'/'.join(map(str, budgets))} tokens, as in the tool-use SFT's evaluation; snippets: "
          f"{search_options['snippet']}, {search_options['snippet_chars']} characters).", ""] + lines + ["", "![accuracy](knowledge.png)"]
  if len(task_lines) > 2:
    text += ["", "## Tasks with and without tools", "",
             "Each SFT's own final held-out evaluation (greedy): the plain SFT answers in words, the tool-use "
             "SFT through the calculator and Python; mean ± std [per seed].", ""] + list(task_lines)
  with open(os.path.join(out, "knowledge.md"), "w") as f:
    f.write("\n".join(text) + "\n")
  with open(os.path.join(out, "knowledge.json"), "w") as f:
    json.dump(summary, f, indent=1)
  plot(summary, os.path.join(out, "knowledge.png"))
  print("\n".join(lines + [""] + list(task_lines)), flush=True)


def plot(summary: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups = [g for _, _, g in evaluation.EXPOSURE_BUCKETS]
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for i, mode in enumerate(knowledge.MODES):
    xs = [j + (i - 1) * 0.27 for j, g in enumerate(groups) if f"{mode}/{g}" in summary]
    cells = [summary[f"{mode}/{g}"] for g in groups if f"{mode}/{g}" in summary]
    ax.bar(xs, [c["mean"] for c in cells], yerr=[c["std"] for c in cells], width=0.27, label=mode)
  ax.set_xticks(range(len(groups)), groups)
  ax.set_xlabel("times the fact appeared in pretraining")
  ax.set_ylabel("held-out accuracy")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


if __name__ == "__main__":
  cli.run(lambda: None, lambda _: main(), required=())
