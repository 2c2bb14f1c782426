"""The pipeline's report card: <workdir>/report.md and PNGs beside it, from what each stage wrote.

Nothing is recomputed: every number is read from a stage's own files (metrics.jsonl,
report.md, eval.jsonl, eval_samples.jsonl, best_of_n.json, web_stats.json,
tokenizer_report.json, tokenize_report.json, the rankings JSONL) and
pipeline_done.json. A stage that has not run, or a key it did not log, shows "—".
`checks(workdir)` is the "did each stage do its job" table as data (tests assert on it).
"""
from __future__ import annotations

import math
import os
import re

from lm import pipeline, report_card_plots
from lm.stage_outputs import (eval_rows, first_last, median, metrics, rankings_stats, read_json, read_jsonl,
                              refusal_before_after, report_samples, series)

DASH = "—"


def fmt(v, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return DASH
  if isinstance(v, int) and not isinstance(v, bool):
    return f"{v:,}"
  return f"{v:.{digits}f}"


def _minutes(seconds) -> str:
  return DASH if seconds is None else pipeline.duration(seconds)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _quote(text: str, limit: int = 400) -> str:
  text = text if len(text) <= limit else text[:limit] + " …"
  return text.replace("\n", " ⏎ ")


# --- the checks: did each stage move its measure the intended way? ------------------------------

def _rises(start, end) -> bool | None:
  return None if start is None or end is None else end > start


KEPT = 0.05  # "kept": drops by less than this (the refusal issue's bar for facts seen 8+ times)


def _kept(start, end) -> bool | None:
  return None if start is None or end is None else end > start - KEPT


def checks(workdir: str) -> list[dict]:
  """One row per stage measure: start, end, what the stage intends, and whether it did (None: unknown)."""
  p = lambda *parts: os.path.join(workdir, *parts)  # noqa: E731
  rows = []

  def add(stage, measure, start, end, intended, ok):
    rows.append({"stage": stage, "measure": measure, "start": start, "end": end, "intended": intended, "ok": ok})

  web = read_json(p("data", "web_stats.json")) or {}
  steps = web.get("steps") or []
  read, kept = (steps[0]["in"], steps[-1]["kept"]) if steps else (None, None)
  add("data", "documents: read → kept by the web pipeline", read, kept, "most kept, some dropped",
      None if read is None else 0 < kept < read)
  tok = read_json(p("data", "tokenizer", "tokenizer_report.json")) or {}
  bpt = tok.get("heldout_bytes_per_token")
  add("data", "held-out bytes per BPE token", 1.0 if bpt is not None else None, bpt, "> 1 (compression)",
      None if bpt is None else bpt > 1)

  base = metrics(p("base"))
  add("base", "held-out loss (nats/token)", *first_last(base, "val/loss"), "falls",
      _rises(*reversed(first_last(base, "val/loss"))))
  for name, label in (("sft", "SFT with tools"), ("sft_chat", "SFT without tools")):
    m = metrics(p(name))
    add(name, f"{label}: format compliance (base → SFT)", *first_last(m, "eval/format"), "rises",
        _rises(*first_last(m, "eval/format")))
  _, calls = first_last(metrics(p("sft")), "eval/tool_calls")
  add("sft", "tool calls per held-out reply", None, calls, "> 0", None if calls is None else calls > 0)
  m = metrics(p("sft_chat"))
  # Step 0 grades the base's own completions with the same strict verifier (exactly the reference, no other
  # candidate): pretraining stored the facts, SFT teaches the format (the row above), and must not lose them.
  add("sft_chat", "world facts seen 8+ times: accuracy", *first_last(m, "eval/world/seen_8+/accuracy"),
      f"kept (drops by less than {KEPT}: in the chat format now)", _kept(*first_last(m, "eval/world/seen_8+/accuracy")))
  m = metrics(p("sft_arith"))
  add("sft_arith", "held-out arithmetic accuracy (greedy)", *first_last(m, "eval/arithmetic/accuracy"), "rises",
      _rises(*first_last(m, "eval/arithmetic/accuracy")))
  m = metrics(p("grpo"))
  add("grpo", "held-out pass@1", *first_last(m, "eval/pass@1"), "rises", _rises(*first_last(m, "eval/pass@1")))
  before, after = refusal_before_after(os.path.join(workdir, "refusal"))
  never, known = "eval/world/seen_never/hallucinated", "eval/world/seen_8+/accuracy"
  b, a = before.get(never), after.get(never)
  add("refusal", "facts never seen: hallucinated (probed sft_chat → after the recipe)", b, a,
      "at least halves", None if b is None or a is None else a <= b / 2)
  b, a = before.get(known), after.get(known)
  add("refusal", "facts seen 8+ times: accuracy", b, a, f"drops by less than {KEPT}", _kept(b, a))
  add("refusal", "facts seen 8+ times: refused", before.get("eval/world/seen_8+/refused"),
      after.get("eval/world/seen_8+/refused"), "measured: low (not refusing everything)", None)
  m = metrics(p("reward_model"))
  start, end = first_last(m, "val/accuracy")
  add("reward_model", "held-out pairwise accuracy (chance 0.5)", start, end, "rises above 0.5",
      None if end is None else bool(_rises(start, end)) and end > 0.5)
  m = metrics(p("rlhf"))
  add("rlhf", "proxy reward (the reward model's score)", *first_last(m, "eval/proxy"), "rises",
      _rises(*first_last(m, "eval/proxy")))
  add("rlhf", "gold reward (hidden labeller, never trained on)", *first_last(m, "eval/gold"),
      "measured: rises, then falls once the policy exploits the proxy", None)
  return rows


# --- sections --------------------------------------------------------------------------------------

def _stages_section(workdir: str, stages) -> list[str]:
  rows, total = [], 0.0
  for s in stages:
    done = pipeline.read_done(workdir, s.name)
    log = os.path.join(workdir, f"{s.name}.log")
    status = "done" if done else ("started, not finished" if os.path.exists(log) else "not run")
    m = [r for w in s.workdirs for r in metrics(w)]
    total += (done or {}).get("seconds", 0.0)
    rows.append([s.name, status, _minutes((done or {}).get("seconds")), fmt(median(m, "perf/tokens_per_sec"), 0),
                 fmt(median(m, "perf/mfu"), 2), f"`{s.name}.log`" if os.path.exists(log) else DASH])
  n_done = sum(r[1] == "done" for r in rows)
  out = ["## Stages", "", f"{n_done} of {len(stages)} stages finished; their wall time adds up to "
         f"{_minutes(total)} (a stage's time is that of the run that finished it). tokens/s and MFU are the "
         "medians of the stage's logged training steps.", ""]
  return out + _table(["stage", "status", "wall time", "tokens/s", "MFU", "log"], rows)


def _checks_section(workdir: str) -> list[str]:
  mark = {True: "✓", False: "✗", None: DASH}
  rows = [[c["stage"], c["measure"], fmt(c["start"]), fmt(c["end"]), c["intended"], mark[c["ok"]]]
          for c in checks(workdir)]
  return ["## Did each stage do its job?", ""] + _table(["stage", "measure", "start", "end", "intended", ""], rows)


def _data_section(workdir: str) -> list[str]:
  d = os.path.join(workdir, "data")
  out = ["## Data: synthetic crawl → clean text → BPE → shards", ""]
  web = read_json(os.path.join(d, "web_stats.json")) or {}
  steps = web.get("steps") or []
  if steps:
    out += _table(["filter", "in", "kept", "dropped", "why"],
                  [[s["step"], fmt(s["in"]), fmt(s["kept"]), fmt(s["dropped"]),
                    ", ".join(f"{k} {v}" for k, v in (s.get("reasons") or {}).items())] for s in steps])
  else:
    out.append(f"web pipeline: {DASH}")
  labels = web.get("labels") or {}
  scored = [(k.replace("_", " "), labels[k]) for k in ("near_duplicates_removed", "non_english_removed",
            "blocklisted_removed", "low_quality_removed", "encyclopedia_kept", "good_pages_kept") if k in labels]
  if scored:
    out += ["", "Against the crawl's hidden labels: " + ", ".join(f"{k} {v:.0%}" for k, v in scored)
            + f"; PII left in kept text: {labels.get('pii_in_kept_text', DASH)}."]
  tok = read_json(os.path.join(d, "tokenizer", "tokenizer_report.json")) or {}
  others = ", ".join(f"{k} {v:.2f}" for k, v in (tok.get("bytes_per_token") or {}).items())
  out += ["", f"Tokenizer: BPE of {fmt(tok.get('vocab_size'))} tokens, {fmt(tok.get('heldout_bytes_per_token'), 2)} "
          f"bytes per token on held-out documents" + (f" ({others})" if others else "") + "."]
  shards = read_json(os.path.join(d, "shards", "tokenize_report.json")) or {}
  tr, va = shards.get("train") or {}, shards.get("val") or {}
  out.append(f"Shards: {fmt(tr.get('num_tokens'))} training tokens in {fmt(tr.get('num_docs'))} documents, "
             f"{fmt(va.get('num_tokens'))} held-out tokens in {fmt(va.get('num_docs'))}.")
  return out


def _base_section(workdir: str, plots: dict) -> list[str]:
  m = metrics(os.path.join(workdir, "base"))
  v0, v1 = first_last(m, "val/loss")
  _, bpb = first_last(m, "val/bits_per_byte")
  _, tl = first_last(m, "train/loss")
  c0, c1 = first_last(m, "val/copy_gain")
  out = ["## Base model (pretraining)", "",
         f"Held-out loss {fmt(v0)} → {fmt(v1)} nats/token ({fmt(bpb)} bits/byte); last training loss {fmt(tl)}."]
  if c1 is not None:
    out.append(f"In-context copying (`lm/probes.py`: loss on a random sequence's second copy below its first): "
               f"{fmt(c0, 2)} → {fmt(c1, 2)} nats/token.")
  if "losses" in plots:
    out += ["", f"![losses]({plots['losses']})"]
  for s in [_quote(b, 300) for b in report_samples(os.path.join(workdir, "base"))]:
    out += ["", f"Sample (temperature 0.8): `{s}`"]
  return out


SFT_ROWS = (("format (reply ends its turn)", "eval/format"), ("reply tokens", "eval/reply_tokens"),
            ("tool calls per reply", "eval/tool_calls"), ("world facts, all", "eval/world/accuracy"),
            ("world facts seen 8+ times", "eval/world/seen_8+/accuracy"),
            ("world facts seen 4 times", "eval/world/seen_4/accuracy"),
            ("world facts seen 2 times", "eval/world/seen_2/accuracy"),
            ("world facts seen once", "eval/world/seen_once/accuracy"),
            ("world facts never seen", "eval/world/seen_never/accuracy"),
            ("arithmetic", "eval/arithmetic/accuracy"), ("spelling / letter counting", "eval/spelling/accuracy"),
            ("letter counting", "eval/spelling/count/accuracy"), ("spelling out", "eval/spelling/spell/accuracy"))


def _sft_section(workdir: str) -> list[str]:
  chat, tools = metrics(os.path.join(workdir, "sft_chat")), metrics(os.path.join(workdir, "sft"))
  rows = []
  for label, key in SFT_ROWS:
    (c0, c1), (t0, t1) = first_last(chat, key), first_last(tools, key)
    rows.append([label, fmt(c0), fmt(c1), fmt(t0), fmt(t1)])
  out = ["## SFT: held-out tasks before (the base model) and after, greedy", "",
         "Facts are about entities never asked in SFT, grouped by how often the fact is stated in the "
         "training shards. \"Tools\" columns: the same prompts with the python and search tools running "
         "(the base model never calls them).", ""]
  out += _table(["held-out", "base", "SFT (sft_chat)", "base, tools on", "SFT with tools (sft)"], rows)
  for name, title in (("sft", "with tools"), ("sft_chat", "without tools")):
    samples = eval_rows(os.path.join(workdir, name, "eval.jsonl"))
    if samples:
      out += ["", f"Replies after SFT {title} (held-out):", ""]
      for r in samples:
        calls = "; ".join(f"{c.get('name')}({c.get('arguments')!r}) → {o!r}"
                          for c, o in zip(r.get("calls", []), r.get("outputs", [])))
        out.append(f"- {r.get('task')}: `{_quote(str(r.get('reply', '')), 200)}`"
                   + (f" [calls: {_quote(calls, 200)}]" if calls else "")
                   + f" (reference {r.get('reference')!r}, {'right' if r.get('score') else 'wrong'})")
  return out


def _arith_section(workdir: str) -> list[str]:
  m = metrics(os.path.join(workdir, "sft_arith"))
  a0, a1 = first_last(m, "eval/arithmetic/accuracy")
  v0, v1 = first_last(m, "val/loss")
  out = ["## Arithmetic SFT (GRPO's start)", "",
         f"Held-out worked arithmetic, greedy: accuracy {fmt(a0)} → {fmt(a1)}; assistant-token loss "
         f"{fmt(v0)} → {fmt(v1)}."]
  for r in eval_rows(os.path.join(workdir, "sft_arith", "eval.jsonl")):
    out += ["", f"Reply: `{_quote(str(r.get('reply', '')), 300)}` (reference {r.get('reference')!r})"]
  return out


def _rl_samples(stage_dir: str, keys: tuple[str, ...]) -> list[str]:
  rows = read_jsonl(os.path.join(stage_dir, "eval_samples.jsonl"))
  if not rows:
    return []
  steps = sorted({r.get("step", 0) for r in rows})
  out = []
  for step in dict.fromkeys((steps[0], steps[-1])):
    for r in [r for r in rows if r.get("step") == step][:2]:
      scores = ", ".join(f"{k} {r[k]:+.2f}" for k in keys if isinstance(r.get(k), (int, float)))
      out.append(f"- step {step}: {r.get('prompt')!r} → `{_quote(str(r.get('reply', '')), 250)}`"
                 + (f" ({scores})" if scores else ""))
  return out


def _grpo_section(workdir: str, plots: dict) -> list[str]:
  d = os.path.join(workdir, "grpo")
  m = metrics(d)
  passk = next((k for r in m for k in r if re.fullmatch(r"eval/pass@\d+", k) and k != "eval/pass@1"), None)
  greedy = next((k for r in m for k in r if re.fullmatch(r"eval/greedy_[^/]+/accuracy", k)), None)
  evals = [r for r in m if "eval/pass@1" in r]
  rows = [[str(r["step"]), fmt(r.get("eval/pass@1")), fmt(r.get(passk) if passk else None),
           fmt(r.get(greedy) if greedy else None), fmt(r.get("eval/length_correct"), 1),
           fmt(r.get("eval/length_wrong"), 1), fmt(r.get("eval/kl"), 4)] for r in evals]
  p0, p1 = first_last(m, "eval/pass@1")
  out = ["## GRPO on worked addition", "",
         f"Held-out pass@1 {fmt(p0)} → {fmt(p1)} (problems the training never sees)."]
  if rows:
    out += [""] + _table(["step", "pass@1", passk.split("/")[-1] if passk else "pass@k", "greedy",
                          "length correct", "length wrong", "KL/token"], rows)
  if "grpo" in plots:
    out += ["", f"![GRPO]({plots['grpo']})"]
  samples = _rl_samples(d, ("reward",))
  if samples:
    out += ["", "Sampled replies at the start and the end:", ""] + samples
  return out


def _rm_section(workdir: str) -> list[str]:
  n, pairs, gold = rankings_stats(os.path.join(workdir, "rankings", "seed0.jsonl"))
  m = metrics(os.path.join(workdir, "reward_model"))
  rows = [[str(r["step"]), fmt(r.get("val/loss"), 4), fmt(r.get("val/accuracy")), fmt(r.get("val/top1"))]
          for r in m if "val/accuracy" in r]
  out = ["## Reward model on the gold rankings", "",
         f"Rankings from sft_chat: {fmt(n) if n else DASH} (replies that all tie are dropped), "
         f"{fmt(pairs) if n else DASH} ordered pairs, mean gold score {fmt(gold)}. Held-out split by prompt:"]
  if rows:
    out += [""] + _table(["step", "loss", "pairwise accuracy (chance 0.5)", "top-1"], rows)
  return out


def _rlhf_section(workdir: str, plots: dict) -> list[str]:
  d = os.path.join(workdir, "rlhf")
  m = metrics(d)
  evals = [r for r in m if "eval/proxy" in r or "eval/gold" in r]
  second = any("eval/proxy2" in r for r in evals)
  header = ["step", "KL/reply", "proxy", "gold", "pass@1"] + (["proxy2", "rm agreement"] if second else [])
  rows = [[str(r["step"]), fmt(r.get("eval/kl_reply")), fmt(r.get("eval/proxy")), fmt(r.get("eval/gold")),
           fmt(r.get("eval/pass@1"))] + ([fmt(r.get("eval/proxy2")), fmt(r.get("eval/rm_agreement"))] if second else [])
          for r in evals]
  g0, g1 = first_last(m, "eval/gold")
  q0, q1 = first_last(m, "eval/proxy")
  out = ["## RLHF: proxy reward against gold reward and KL", "",
         f"Proxy (the reward model) {fmt(q0)} → {fmt(q1)}; gold (hidden labeller) {fmt(g0)} → {fmt(g1)}, "
         f"best {fmt(max((v for _, v in series(m, 'eval/gold')), default=None))}."]
  if rows:
    out += [""] + _table(header, rows)
  bon = read_json(os.path.join(d, "best_of_n.json"))
  if bon and bon.get("n"):
    out += ["", "Best-of-n against the proxy, from the start (KL = log n − (n−1)/n):", ""]
    out += _table(["n", "KL", "proxy", "gold"], [[str(n), fmt(k), fmt(p), fmt(g)] for n, k, p, g in
                                                 zip(bon["n"], bon["kl"], bon["proxy"], bon["gold"])])
  if "rlhf" in plots:
    out += ["", f"![RLHF]({plots['rlhf']})"]
  samples = _rl_samples(d, ("proxy", "gold"))
  if samples:
    out += ["", "Replies before RLHF and at the end:", ""] + samples
  return out


def _refusal_section(workdir: str) -> list[str]:
  d = os.path.join(workdir, "refusal")
  before, after = refusal_before_after(os.path.join(workdir, "refusal"))
  probe = read_jsonl(os.path.join(d, "refusal", "probe.jsonl"))
  out = ["## Refusal recipe (Llama 3): say \"I don't know\" where the model does not know", ""]
  if probe:
    unknown = sum(bool(r.get("unknown")) for r in probe)
    out += [f"Probe: sft_chat answered each of {len(probe)} training-entity facts {probe[0].get('samples', DASH)} "
            f"times at temperature 1; {unknown} marked unknown (consistently wrong) and answered with a refusal "
            "in the new SFT data, which trains again from the base model.", ""]
  rows = []
  for name in ("never", "once", "2", "4", "8+", None):
    k = f"eval/world/seen_{name}" if name else "eval/world"
    if f"{k}/accuracy" in before or f"{k}/accuracy" in after:
      rows.append([name or "all"] + [f"{fmt(before.get(f'{k}/{m}'))} → {fmt(after.get(f'{k}/{m}'))}"
                                     for m in ("accuracy", "refused", "hallucinated")])
  if rows:
    out += ["Held-out facts (entities never in SFT data), greedy, sft_chat (before) → after the recipe:", ""]
    out += _table(["seen in pretraining", "accuracy", "refused", "hallucinated (wrong, not refused)"], rows)
  else:
    out.append(f"Before → after: {DASH}")
  if os.path.exists(os.path.join(d, "refusal.png")):
    out += ["", "![refusal](refusal/refusal.png)"]
  return out


# --- the card ----------------------------------------------------------------------------------------

def render(workdir: str, stages, plots: dict) -> str:
  lines = [f"# Report card: {os.path.basename(os.path.abspath(workdir))}", "",
           "From a synthetic web crawl to an RLHF'd assistant in one command (`python -m experiments.pipeline`). "
           "Every number is read from the stage's own files under this folder; — marks what a stage has not "
           "written (yet).", ""]
  for section in (_stages_section(workdir, stages), _checks_section(workdir), _data_section(workdir),
                  _base_section(workdir, plots), _sft_section(workdir), _arith_section(workdir),
                  _grpo_section(workdir, plots), _refusal_section(workdir), _rm_section(workdir),
                  _rlhf_section(workdir, plots)):
    lines += section + [""]
  return "\n".join(lines)


def write(workdir: str, stages) -> str:
  """Rewrites <workdir>/report.md (atomically) and its PNGs."""
  text = render(workdir, stages, report_card_plots.draw(workdir))
  path = os.path.join(workdir, "report.md")
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
  return path
