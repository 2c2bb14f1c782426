"""Held-out evaluation of a chat model on tasks, independent of any training reward.

    rows = evaluation.run_tasks(model, params, tok, examples, reward, max_new_tokens=64, mesh=..., rules=...)
    evaluation.summarize(rows)  → {"eval/<task>/accuracy": ..., "eval/format": ..., ...}

Each example's prompt is rendered with the one conversation format (or, given
`fmt`, an imported model's own chat template: `lm.chat_template.chat_format`),
all of them are decoded greedily in one batched call (stopping at the format's
end of turn, `<|im_end|>` in ours), the reply is parsed back
(`parse_assistant`), and two things are scored
separately: format (the reply ended with `<|im_end|>` before the length limit)
and the task's own `reward(text, example)`. Rows are grouped for the tables by
task and, where an example carries `meta["exposures"]`, by how often its fact
appeared in pretraining (never, once, 2, 4, 8+), or by its kind of question
(`meta["kind"]` or `meta["op"]`: letter counting and spelling out, addition and
multiplication). Every reply is also checked for a
refusal (`is_refusal`: the wordings of `lm.refusal.REFUSALS` and common
paraphrases); for the world's facts the summary gives, per
group, the refusal rate and the hallucination rate: replies that are neither
right nor a refusal (confident wrong answers).

With `tools` ({"python": fn, "search": fn}), replies are decoded by the rollout
engine (`lm.engine`): the model's tool calls run and their outputs are forced
into the reply, the whole turn is parsed back (`parse_turn`), and the reward
reads the assistant's own words (tool outputs excluded); each row records its
calls.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from lm import chat_template, conversation, engine, sampling, sharding

_REFUSAL = re.compile(r"\b(I don't know|I do not know|I'm not sure|I am not sure|I can't say|I cannot say|"
                      r"no reliable information|don't have reliable information)\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
  """The reply declines to answer ("I don't know …", "I'm not sure …", "no reliable information")."""
  return bool(_REFUSAL.search(text))


def declines(task, text: str, example) -> bool:
  """A refusal that names no answer of the asked kind (`task.answer`, where the task has one): "She was
  born in 1976. I'm not sure." is a hedged wrong answer, not a refusal."""
  answer = getattr(task, "answer", None)
  return is_refusal(text) and not (answer is not None and answer(text, example))


def honesty_reward(task, text: str, example, wrong_penalty: float) -> float:
  """The task's verifier, with a reply that is neither right nor `declines` scored −`wrong_penalty`: a
  refusal (0) beats a confident or hedged wrong answer, a right answer (1) beats both (GRPO's
  `rl.wrong_penalty`)."""
  score = task.reward(text, example)
  if wrong_penalty and score < 0.5 and not declines(task, text, example):
    return score - wrong_penalty
  return score


EXPOSURE_BUCKETS = ((0, 0, "never"), (1, 1, "once"), (2, 3, "2"), (4, 7, "4"), (8, 10**9, "8+"))


def exposure_bucket(n: int) -> str:
  return next(name for lo, hi, name in EXPOSURE_BUCKETS if lo <= n <= hi)


def run_tasks(model, params, tok, examples: Sequence[Any], reward: Callable[[str, Any], float], *,
              max_new_tokens: int, mesh=None, rules=(), batch_size: int = 64, fmt=None, tools=None,
              max_tool_tokens: int = 64, prompts: Sequence[Sequence[int]] | None = None,
              refuses: Callable[[str, Any], bool] | None = None) -> list[dict]:
  """Greedy replies to every example; one row per example with its task, group, format and score.

  `fmt` renders and parses (default: the project's own format; `lm.chat_template` for a model's
  own template). `tools` needs the own format. `prompts` (optional, one id list per example)
  replaces the rendered `ex.messages`, e.g. a prompt with a document pasted before the question.
  `refuses(text, ex)` decides a row's "refused" (default: `is_refusal`; GRPO passes `declines`, so a
  hedged wrong answer is not counted as a refusal)."""
  fmt = fmt or chat_template.OwnFormat(tok)
  refuses = refuses or (lambda text, ex: is_refusal(text))
  rows = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    ids = [list(p) for p in prompts[start:start + batch_size]] if prompts is not None else \
        [fmt.render_prompt(ex.messages).tolist() for ex in chunk]
    # Pad the batch to a fixed size: one compiled sampler for every chunk.
    padded = ids + [ids[-1]] * (batch_size - len(ids))
    if tools:
      out = engine.rollout(model, params, tok, padded, max_new_tokens, tools=tools, temperature=0.0,
                           stop_ids=fmt.stop_ids, pad_multiple=32, max_tool_tokens=max_tool_tokens,
                           mesh=mesh, rule_pairs=rules)
      tokens, lengths = out.tokens_BN, out.lengths_B
    else:
      out = sampling.generate(model, params, padded, max_new_tokens, temperature=0.0, stop_ids=fmt.stop_ids,
                              pad_id=tok.pad_id, pad_multiple=32, mesh=mesh, rule_pairs=rules)
      tokens, lengths = sharding.to_host((out.tokens, out.lengths))  # rows on every host
    for i, ex in enumerate(chunk):
      reply_ids = tokens[i, :lengths[i]].tolist()
      # With tools the whole turn (calls and forced outputs) is parsed; the reward reads the words.
      turn = conversation.parse_turn(reply_ids, tok) if tools else None
      if turn is None:
        parsed = fmt.parse_assistant(reply_ids)
        turn = {"messages": [parsed["message"]], "ended": parsed["ended"]}
      said = [m for m in turn["messages"] if m["role"] == "assistant"]
      text = "\n".join(m["content"] for m in said if m["content"])
      meta = getattr(ex, "meta", {}) or {}
      group = exposure_bucket(meta["exposures"]) if "exposures" in meta else ""
      row = {"task": ex.task, "group": group, "format": bool(turn["ended"]),
             "score": float(reward(text, ex)), "refused": refuses(text, ex), "reply": text,
             "reference": ex.reference,
             "tokens": int(lengths[i]), "meta": meta}
      if tools:
        row["calls"] = [{"name": m["tool_call"]["name"], "arguments": m["tool_call"]["arguments"]}
                        for m in said if "tool_call" in m]
        row["outputs"] = [m["content"] for m in turn["messages"] if m["role"] == "tool"]
      rows.append(row)
  return rows


KIND_KEYS = ("kind", "op")  # meta keys naming a question's kind (spelling: count/spell; arithmetic: add/mul)


def summarize(rows: Sequence[dict]) -> dict[str, float]:
  """Flat metrics for metrics.jsonl: format compliance, accuracy per task and per exposure group."""
  if not rows:
    return {}
  out = {"eval/format": float(np.mean([r["format"] for r in rows])),
         "eval/reply_tokens": float(np.mean([r["tokens"] for r in rows]))}
  if any("calls" in r for r in rows):
    out["eval/tool_calls"] = float(np.mean([len(r.get("calls", ())) for r in rows]))
  by: dict[str, list[dict]] = defaultdict(list)
  for r in rows:
    by[r["task"]].append(r)
    if r["group"]:
      by[f"{r['task']}/seen_{r['group']}"].append(r)
    meta = r.get("meta") or {}
    kind = next((meta[k] for k in KIND_KEYS if k in meta), None)
    if kind:  # a task with several kinds of question also gets one accuracy per kind
      by[f"{r['task']}/{kind}"].append(r)
  for k, group in sorted(by.items()):
    out[f"eval/{k}/accuracy"] = float(np.mean([r["score"] for r in group]))
    if k.startswith("world"):  # facts: declining is an answer of its own, a wrong claim is a hallucination
      refused = [bool(r.get("refused")) for r in group]
      out[f"eval/{k}/refused"] = float(np.mean(refused))
      out[f"eval/{k}/hallucinated"] = float(np.mean([r["score"] < 0.5 and not f for r, f in zip(group, refused)]))
  return out
