"""The rollout engine: batched decoding in which the model calls tools in the middle of its turn.

  out = engine.rollout(model, params, tok, prompts, max_new_tokens=128,
                       tools={"python": tools.get("python"), "search": tools.get("search")})
  out.tokens_BN, out.logprobs_BN, out.forced_BN, out.lengths_B, out.calls

The model calls a tool by emitting `<|python_start|>code<|python_end|>` (or the
search markers, `lm.conversation.TOOLS`). When a row samples a call's end
marker it pauses; the host runs the tool in a worker thread and the row's next
tokens are *forced*: `<|output_start|>`, the tool's output encoded as plain
text (`tok.encode` never emits special ids, so an output that spells
`<|im_end|>` stays text), `<|output_end|>`. Forced tokens go through the same
one-token decode step as sampled ones, so they land in the running KV cache
without re-prefilling anything, and the row then samples the rest of its turn.
`forced_BN` marks them: they are given, not chosen, and get no loss in any
later training (`logprobs_BN` is 0 there).

Rows advance independently. Each row has its own cache slot (`pos_B`, the KV
cache's per-row index), its own output length and its own forced-token queue; a
paused row feeds nothing and holds its slot while the other rows keep decoding,
so a slow tool delays only the row that called it. The decode loop runs inside
jit in chunks of up to `chunk` steps and returns to the host early when a row
has just paused, so a call is dispatched at once; while a call is out, chunks
are `poll_chunk` steps, so its row resumes within a few steps of the output's
arrival instead of at the end of a long chunk (with half the rows calling a
5 ms tool ~4 times per 100 tokens, 16-step chunks cost the batch 28% of its
tokens/s; `configs/bench.py:tool_decode` measures it).

`samples_per_prompt` = G prefills each prompt once and copies its cache to its
G rows (GRPO's groups). With no tool calls the tokens equal
`sampling.generate`'s for the same seed (the same random stream, indexed by
step); `sampling.generate` stays the lockstep fast path when tools are off.

With a mesh, rows are split over the batch axes and parameters keep their
shardings, as in `lm.sampling`. On several hosts every host drives the same
decode (the same prompts, whole rows gathered each chunk) and runs the same
tool calls; a chunk then waits for all pending calls, so every host resumes
the same rows.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm import conversation, kv_cache, sampling, sharding
from lm.errors import UserError

Tool = Callable[[str], str]


class EngineState(NamedTuple):
  """Everything the decode loop carries (a pytree); N = output slots per row, F = forced-queue width."""
  cache: Any
  logits_BV: jax.Array    # next-token logits of every row
  pos_B: jax.Array        # cache slot the row's next fed token is written to
  start_B: jax.Array      # first real slot of each row (left padding before it)
  step: jax.Array         # () decode steps so far: indexes the random stream
  n_B: jax.Array          # tokens in each row's output so far (sampled + forced)
  done_B: jax.Array
  paused_B: jax.Array     # waiting for a tool's output
  limit_B: jax.Array      # per-row max output tokens
  stop_BS: jax.Array      # ids that end a row, -1 padded
  pause_BS: jax.Array     # per row, ids that end a tool call (pause the row), -1 padded
  forced_BF: jax.Array    # tokens to feed before sampling again
  forced_n_B: jax.Array   # how many of forced_BF are queued
  forced_i_B: jax.Array   # how many of them have been fed
  tokens_BN: jax.Array
  logprobs_BN: jax.Array  # log p(token) under the model for sampled tokens, 0 for forced ones
  forced_BN: jax.Array    # bool: the token was forced
  rng: jax.Array


@dataclasses.dataclass
class ToolCall:
  row: int
  name: str
  arguments: str
  output: str = ""
  started_s: float = 0.0   # when it was dispatched, seconds from the rollout's start
  seconds: float = 0.0     # the tool's own wall time
  truncated: bool = False  # the output was cut to fit max_tool_tokens or the row's budget


class Rollout(NamedTuple):
  tokens_BN: np.ndarray    # int32; pad after a row's end
  logprobs_BN: np.ndarray  # float32
  forced_BN: np.ndarray    # bool
  lengths_B: np.ndarray    # int32 tokens in each row's output, stop token included
  calls: list[ToolCall]
  finished_s: np.ndarray   # seconds from the start until the host saw each row finish
  steps: int               # decode steps taken


def _batch_axis(cache) -> int:
  return 1 if "layers" in cache else 0  # scanned layers stack on a leading axis


def _prefill(model, params, prompt_BP, start_B, limit_B, stop_BS, pause_BS, rng, *, max_new_tokens,
             max_tool_tokens, group):
  U, P = prompt_BP.shape
  cache = kv_cache.init(model.cfg, U, P + max_new_tokens)
  logits_BPV, cache = model.apply({"params": params}, prompt_BP, cache=cache,
                                  cache_index=jnp.int32(0), cache_start_B=start_B)
  logits_BV = logits_BPV[:, -1]
  if group > 1:  # each prompt was prefilled once; its G rows share copies of that cache
    axis = _batch_axis(cache)
    cache = jax.tree.map(lambda x: jnp.repeat(x, group, axis=axis), cache)
    logits_BV, start_B, limit_B, stop_BS, pause_BS = (
        jnp.repeat(x, group, axis=0) for x in (logits_BV, start_B, limit_B, stop_BS, pause_BS))
  B = U * group
  zeros_B = jnp.zeros((B,), jnp.int32)
  return EngineState(
      cache=cache, logits_BV=logits_BV, pos_B=jnp.full((B,), P, jnp.int32), start_B=start_B,
      step=jnp.int32(0), n_B=zeros_B, done_B=limit_B <= 0, paused_B=jnp.zeros((B,), bool),
      limit_B=limit_B, stop_BS=stop_BS, pause_BS=pause_BS,
      forced_BF=jnp.zeros((B, max_tool_tokens), jnp.int32), forced_n_B=zeros_B, forced_i_B=zeros_B,
      tokens_BN=jnp.zeros((B, max_new_tokens), jnp.int32),
      logprobs_BN=jnp.zeros((B, max_new_tokens), jnp.float32),
      forced_BN=jnp.zeros((B, max_new_tokens), bool), rng=rng)


def _decode(model, params, state: EngineState, steps, temperature, top_k, top_p, pad_id):
  """Up to `steps` steps; stops early when every row is done or paused, or a row has just paused."""
  end = state.step + steps
  paused_at_entry_B = state.paused_B
  N = state.tokens_BN.shape[1]
  F = state.forced_BF.shape[1]

  def cond(s: EngineState):
    runnable = ~s.done_B & ~s.paused_B
    return (s.step < end) & jnp.any(runnable) & ~jnp.any(s.paused_B & ~paused_at_entry_B)

  def body(s: EngineState):
    runnable_B = ~s.done_B & ~s.paused_B
    has_forced_B = s.forced_i_B < s.forced_n_B
    sampled_B = sampling.choose(s.logits_BV, jax.random.fold_in(s.rng, s.step), temperature, top_k, top_p)
    forced_B = jnp.take_along_axis(s.forced_BF, jnp.minimum(s.forced_i_B, F - 1)[:, None], 1)[:, 0]
    token_B = jnp.where(runnable_B, jnp.where(has_forced_B, forced_B, sampled_B), pad_id)
    chose_B = runnable_B & ~has_forced_B
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(s.logits_BV, -1), token_B[:, None], -1)[:, 0]
    logp_B = jnp.where(chose_B, logp_B, 0.0)
    at_BN = runnable_B[:, None] & (jnp.arange(N)[None, :] == s.n_B[:, None])
    n_B = s.n_B + runnable_B
    stopped_B = chose_B & jnp.any(token_B[:, None] == s.stop_BS, -1)
    done_B = s.done_B | stopped_B | (n_B >= s.limit_B)
    paused_B = s.paused_B | (chose_B & jnp.any(token_B[:, None] == s.pause_BS, -1) & ~done_B)
    logits_B1V, cache = model.apply({"params": params}, token_B[:, None], cache=s.cache,
                                    cache_index=s.pos_B, cache_start_B=s.start_B)
    return s._replace(
        cache=cache, logits_BV=jnp.where(runnable_B[:, None], logits_B1V[:, 0], s.logits_BV),
        pos_B=s.pos_B + runnable_B, step=s.step + 1, n_B=n_B, done_B=done_B, paused_B=paused_B,
        forced_i_B=s.forced_i_B + (runnable_B & has_forced_B),
        tokens_BN=jnp.where(at_BN, token_B[:, None], s.tokens_BN),
        logprobs_BN=jnp.where(at_BN, logp_B[:, None], s.logprobs_BN),
        forced_BN=jnp.where(at_BN, has_forced_B[:, None], s.forced_BN))

  return jax.lax.while_loop(cond, body, state)


def _resume(state: EngineState, rows_B, forced_BF, forced_n_B) -> EngineState:
  """Queue tool outputs for `rows_B` and let them run again."""
  return state._replace(
      forced_BF=jnp.where(rows_B[:, None], forced_BF, state.forced_BF),
      forced_n_B=jnp.where(rows_B, forced_n_B, state.forced_n_B),
      forced_i_B=jnp.where(rows_B, 0, state.forced_i_B),
      paused_B=state.paused_B & ~rows_B)


_prefill_jit = jax.jit(_prefill, static_argnames=("model", "max_new_tokens", "max_tool_tokens", "group"))
_decode_jit = jax.jit(_decode, static_argnames=("model",), donate_argnames=("state",))  # steps traced
_resume_jit = jax.jit(_resume, donate_argnames=("state",))


def tool_ids(tok, tools: Mapping[str, Tool]) -> tuple[dict[int, str], dict[str, int]]:
  """{end-marker id: tool name} for the tools given, and {start-marker name: id}."""
  sp = getattr(tok, "special_ids", {})
  ends, starts = {}, {}
  for name in tools:
    if name not in conversation.TOOLS:
      raise UserError(f"engine: unknown tool {name!r}; the conversation format has {sorted(conversation.TOOLS)}")
    start, end = conversation.TOOLS[name]
    if start not in sp or end not in sp:
      raise UserError(f"engine: the tokenizer has no {start}/{end} special tokens for the {name!r} tool")
    ends[sp[end]] = name
    starts[name] = sp[start]
  return ends, starts


@dataclasses.dataclass
class Event:
  """What `stream` yields after each decode chunk."""
  new_tokens: list[list[int]]   # per row, the tokens added since the last event
  new_forced: list[list[bool]]  # per row, whether each of them was forced
  calls: list[ToolCall]         # calls dispatched in this chunk (output empty until done)
  outputs: list[ToolCall]       # calls whose output was queued into their row in this chunk
  done_B: np.ndarray


def stream(model, params, tok, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
           tools: Mapping[str, Tool] | None = None, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, samples_per_prompt: int = 1, chunk: int = 16,
           poll_chunk: int = 2, max_tool_tokens: int = 64, stop_ids: Sequence[int] | None = None, pad_multiple: int = 1,
           mesh=None, rule_pairs=(), tool_workers: int = 8, tool_rows: Sequence[bool] | None = None,
           _result: list | None = None) -> Iterator[Event]:
  """Decode with tool calls, yielding an `Event` per chunk; `rollout` collects the whole result.

  While a tool call is out, chunks shrink to `poll_chunk` steps so its row resumes
  soon after the output arrives (a long chunk would keep it paused to its end).

  `tool_rows` (one flag per prompt) limits the tools to some prompts: the others
  decode as if no tool existed (their call markers are ordinary tokens)."""
  tools = dict(tools or {})
  if max_tool_tokens < 3:
    raise UserError(f"engine: max_tool_tokens={max_tool_tokens} leaves no room for a tool's output")
  if samples_per_prompt < 1:
    raise UserError(f"engine: samples_per_prompt must be ≥ 1, got {samples_per_prompt}")
  pad_id = int(tok.pad_id)
  stops = list(stop_ids) if stop_ids is not None else [
      i for i in (tok.special_ids.get("<|im_end|>"), tok.eos_id) if i is not None]
  ends, starts = tool_ids(tok, tools)
  pause_S = np.array(sorted(ends) or [-1], np.int32)
  allowed_B = np.ones(len(prompts), bool) if tool_rows is None else np.asarray(tool_rows, bool)
  if allowed_B.shape != (len(prompts),):
    raise UserError(f"engine: tool_rows has {allowed_B.size} flags for {len(prompts)} prompts")
  pause_BS = np.where(allowed_B[:, None], pause_S[None, :], -1).astype(np.int32)
  prompt_BP, start_B, limit_B, stop_BS = sampling.batch_inputs(
      model, prompts, max_new_tokens, stops, None, pad_id, pad_multiple,
      mesh if samples_per_prompt == 1 else None)
  settings = sampling.sampling_settings(temperature, top_k, top_p, pad_id)
  G = samples_per_prompt
  with sampling.mesh_context(mesh, rule_pairs):
    state = _prefill_jit(model, params, prompt_BP, start_B, limit_B, stop_BS, pause_BS,
                         jax.random.key(seed), max_new_tokens=int(max_new_tokens),
                         max_tool_tokens=int(max_tool_tokens), group=G)
  B = len(prompts) * G
  limits_B = np.repeat(sharding.to_host(limit_B), G)
  out_start, out_end = tok.special_ids.get("<|output_start|>"), tok.special_ids.get("<|output_end|>")
  calls: list[ToolCall] = []
  pending: dict[cf.Future, ToolCall] = {}
  waiting = np.zeros(B, bool)        # paused and handed to a tool
  shown = np.zeros(B, np.int64)      # tokens per row already yielded
  finished_s = np.full(B, np.nan)
  t0 = time.perf_counter()
  pool = cf.ThreadPoolExecutor(max_workers=max(1, tool_workers), thread_name_prefix="tool")

  def timed(fn: Tool, call: ToolCall) -> ToolCall:
    t = time.perf_counter()
    try:
      call.output = str(fn(call.arguments))
    except Exception as e:  # a tool's failure is the model's observation, not the run's end
      call.output = f"Error: {type(e).__name__}: {e}"
    call.seconds = time.perf_counter() - t
    return call

  try:
    while True:
      with sampling.mesh_context(mesh, rule_pairs):
        steps = min(chunk, poll_chunk) if pending else chunk
        state = _decode_jit(model, params, state, jnp.int32(steps), *settings)
      n_B, done_B, paused_B, tokens_BN, forced_BN = sharding.to_host(
          (state.n_B, state.done_B, state.paused_B, state.tokens_BN, state.forced_BN))
      now = time.perf_counter() - t0
      finished_s[done_B & np.isnan(finished_s)] = now
      dispatched = []
      for b in np.flatnonzero(paused_B & ~waiting):
        row = tokens_BN[b, :n_B[b]].tolist()
        name = ends[row[-1]]
        begin = max((i for i, t in enumerate(row[:-1]) if t == starts[name]), default=-1)
        call = ToolCall(int(b), name, tok.decode(row[begin + 1:-1]), started_s=now)
        calls.append(call)
        dispatched.append(call)
        pending[pool.submit(timed, tools[name], call)] = call
        waiting[b] = True
      runnable = ~done_B & ~paused_B
      if pending and jax.process_count() > 1:
        # Every host runs the same tools on the same rows; which have answered by now is a race that
        # would resume different rows on different hosts. All of them, then: one decode state.
        cf.wait(list(pending))
      elif pending and not runnable.any():  # nothing to decode until a tool answers
        cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
      ready = [f for f in pending if f.done()]
      answered = [pending.pop(f) for f in ready]
      if answered:
        rows_B = np.zeros(B, bool)
        forced_BF = np.zeros((B, max_tool_tokens), np.int32)
        forced_n_B = np.zeros(B, np.int32)
        for call in answered:
          b = call.row
          room = min(max_tool_tokens, int(limits_B[b]) - int(n_B[b]))
          body = tok.encode(call.output)
          if len(body) + 2 > room:  # the output is cut; the end marker always fits the queue
            body, call.truncated = body[:max(0, room - 2)], True
          ids = [out_start, *body, out_end]
          forced_BF[b, :len(ids)] = ids
          forced_n_B[b] = len(ids)
          rows_B[b] = True
          waiting[b] = False
        state = _resume_jit(state, jnp.asarray(rows_B), jnp.asarray(forced_BF), jnp.asarray(forced_n_B))
      elif not runnable.any() and not done_B.all():
        raise RuntimeError("engine: every unfinished row is paused and no tool call is pending")
      yield Event([tokens_BN[b, shown[b]:n_B[b]].tolist() for b in range(B)],
                  [forced_BN[b, shown[b]:n_B[b]].tolist() for b in range(B)], dispatched, answered, done_B)
      shown[:] = n_B
      if done_B.all():
        break
  finally:
    for f in pending:
      f.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
  if _result is not None:
    n_B, tokens_BN, logprobs_BN, forced_BN, step = sharding.to_host(
        (state.n_B, state.tokens_BN, state.logprobs_BN, state.forced_BN, state.step))
    lengths_B = n_B.astype(np.int32)
    # The decode loop writes only a row's own tokens; past its end the buffer still holds its zeros.
    ended_BN = np.arange(tokens_BN.shape[1])[None, :] >= lengths_B[:, None]
    _result.append(Rollout(np.where(ended_BN, pad_id, tokens_BN), logprobs_BN, forced_BN, lengths_B, calls,
                           finished_s, int(step)))


def rollout(model, params, tok, prompts: Sequence[Sequence[int]], max_new_tokens: int, **kwargs) -> Rollout:
  """Decode every prompt to its end (stop token or limit), running tool calls as they come.

  Takes `stream`'s arguments. Rows are ordered prompt-major: with
  samples_per_prompt=G, rows g·G … g·G+G−1 answer prompt g.
  """
  result: list[Rollout] = []
  for _ in stream(model, params, tok, prompts, max_new_tokens, _result=result, **kwargs):
    pass
  return result[0]


def sequence_of(out: Rollout, b: int) -> tuple[list[int], list[bool]]:
  """Row b's tokens and forced flags, up to its length."""
  n = int(out.lengths_B[b])
  return out.tokens_BN[b, :n].tolist(), out.forced_BN[b, :n].tolist()
