"""Rollout engine: tool outputs forced into a running decode equal re-prefilling the sequence, the
sampled/forced mask is exact, a row waiting on a slow tool does not hold the others back, groups
share one prefill, and without tool calls the engine is the lockstep sampler."""
import collections
import functools
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from lm import engine, sampling, sharding
from lm import model as model_lib
from lm.tokenizer import ByteTokenizer

N = 24
PROMPTS = [[5, 9, 2, 7, 1, 3], [11], [4, 4, 8, 30, 2], [7, 7]]


@functools.lru_cache(maxsize=None)
def make(scan_layers: bool = False, smear_keys: bool = False):
  """A tiny random Llama over the byte tokenizer's vocabulary; a wide init keeps greedy free of ties."""
  tok = ByteTokenizer()
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
             max_len=128, init_std=0.3, scan_layers=scan_layers, smear_keys=smear_keys)
  model = model_lib.build(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  if smear_keys:  # shares other than the init's 0.5, one per kv head
    params["layer_0"]["attn"]["smear"] = jnp.asarray([-1.5, 2.0])
  return model, params


class CallingTokenizer(ByteTokenizer):
  """Byte tokenizer whose `<|python_end|>` is an ordinary byte the random model emits by itself:
  the rows that sample it pause and get a tool's output, as a trained model's calls would."""

  def __init__(self, end_id: int, start_id: int | None = None):
    super().__init__()
    self.special_ids = dict(self.special_ids, **{"<|python_end|>": end_id})
    if start_id is not None:
      self.special_ids["<|python_start|>"] = start_id


def calling_setup(smear_keys: bool = False):
  """The model, its params, and a tokenizer under which some rows call the tool and some never do."""
  model, params = make(smear_keys=smear_keys)
  free = sampling.generate(model, params, PROMPTS, N, temperature=0.0, pad_id=0)
  tokens = np.asarray(free.tokens)
  end_id = int(tokens[0, 2])  # row 0 calls after its third token
  callers = [b for b in range(len(PROMPTS)) if end_id in tokens[b].tolist()]
  assert 0 in callers and len(callers) < len(PROMPTS), "the test needs callers and non-callers"
  return model, params, CallingTokenizer(end_id), callers


def full_logprobs(model, params, prompt, out_tokens):
  """log p of every output token from one uncached forward over prompt + output."""
  seq = np.asarray([list(prompt) + list(out_tokens)], np.int32)
  logp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray(seq))[0], -1)
  P = len(prompt)
  return np.asarray([logp[P - 1 + i, t] for i, t in enumerate(out_tokens)])


def test_without_tool_calls_the_engine_is_the_sampler():
  model, params = make(scan_layers=True)  # scanned layers: the cache's batch axis is 1 (groups repeat on it)
  tok = ByteTokenizer()
  for temperature in (0.0, 1.0):
    ref = sampling.generate(model, params, PROMPTS, N, temperature=temperature, seed=3,
                            stop_ids=[tok.special_ids["<|im_end|>"], tok.eos_id], pad_id=tok.pad_id)
    out = engine.rollout(model, params, tok, PROMPTS, N, temperature=temperature, seed=3, chunk=5)
    np.testing.assert_array_equal(out.tokens_BN, np.asarray(ref.tokens))
    np.testing.assert_array_equal(out.lengths_B, np.asarray(ref.lengths))
    np.testing.assert_allclose(out.logprobs_BN, np.asarray(ref.logprobs), atol=1e-5)
    assert not out.forced_BN.any() and not out.calls


@pytest.mark.parametrize("smear_keys", [False, True])
def test_forced_tokens_equal_reprefilling_and_the_mask_is_exact(smear_keys):
  """(With smeared keys too: the cache holds raw keys, smeared over its slots at every step.)"""
  model, params, tok, callers = calling_setup(smear_keys)
  out = engine.rollout(model, params, tok, PROMPTS, N, tools={"python": lambda args: "42 <|im_end|>"},
                       temperature=0.0, chunk=4)
  sp = tok.special_ids
  assert {c.row for c in out.calls} == set(callers)
  for b, prompt in enumerate(PROMPTS):
    tokens, forced = engine.sequence_of(out, b)
    # The forced spans are exactly <|output_start|> … <|output_end|> after each call's end marker.
    expected, i = [False] * len(tokens), 0
    while i < len(tokens):
      if tokens[i] == sp["<|python_end|>"] and not expected[i] and i + 1 < len(tokens):
        j = i + 1
        assert tokens[j] == sp["<|output_start|>"]
        while j < len(tokens) and tokens[j] != sp["<|output_end|>"]:
          expected[j] = True
          j += 1
        if j < len(tokens):
          expected[j] = True
        i = j
      i += 1
    assert forced == expected, f"row {b}"
    if b in callers:
      assert any(forced)
      span = [t for t, f in zip(tokens, forced) if f]
      closed = span[-1] == sp["<|output_end|>"]  # else the row's token limit cut the output short
      body = span[1:-1] if closed else span[1:]
      # Tool output is data: "<|im_end|>" in it is encoded as plain bytes, never the special id.
      assert sp["<|im_end|>"] not in body
      assert tok.decode(body) == "42 <|im_end|>" if closed else "42 <|im_end|>".startswith(tok.decode(body))
    # Every sampled token's log-prob equals one forward over the whole sequence (cache == re-prefill),
    # and greedy picked the argmax there.
    ref = full_logprobs(model, params, prompt, tokens)
    sampled = ~np.asarray(forced)
    np.testing.assert_allclose(out.logprobs_BN[b, :len(tokens)][sampled], ref[sampled], atol=2e-4)
    assert np.all(out.logprobs_BN[b, :len(tokens)][~sampled] == 0)


def test_a_slow_tool_does_not_hold_back_the_other_rows():
  model, params, tok, callers = calling_setup()
  started = threading.Event()
  slow_s = 2.0

  def slow(args):
    started.set()
    time.sleep(slow_s)
    return "1"

  engine.rollout(model, params, tok, PROMPTS, N, tools={"python": lambda a: "1"}, temperature=0.0)  # compile
  out = engine.rollout(model, params, tok, PROMPTS, N, tools={"python": slow}, temperature=0.0, chunk=2)
  first = min(out.calls, key=lambda c: c.started_s)
  others = [b for b in range(len(PROMPTS)) if b not in callers]
  # The rows that never call finished while the first call was still sleeping.
  for b in others:
    assert out.finished_s[b] < first.started_s + slow_s, (b, out.finished_s, first)
  assert out.lengths_B[others].min() > 0


def test_a_row_resumes_soon_after_its_tool_answers():
  """While a call is out the engine decodes in short chunks (`poll_chunk`), so a fast tool's row loses
  about one step per call, not the rest of a long chunk (what made tool rows slow the whole batch)."""
  model, params, tok, callers = calling_setup()
  kw = dict(tools={"python": lambda a: "1"}, temperature=0.0, chunk=16)
  waits = {}
  for poll in (16, 1):
    out = engine.rollout(model, params, tok, PROMPTS, N, poll_chunk=poll, **kw)
    assert (out.lengths_B == N).all()
    calls_per_row = max(collections.Counter(c.row for c in out.calls).values())
    waits[poll] = (out.steps - N) / calls_per_row  # the slowest row's extra steps per call
  assert waits[1] <= 3 < waits[16], waits


def test_rows_that_stop_early_are_padded_as_the_sampler_pads():
  model, params = make()
  tok = ByteTokenizer()
  free = np.asarray(sampling.generate(model, params, PROMPTS, N, temperature=0.0).tokens)
  stop = int(free[0, 3])  # row 0 stops at its 4th token; the buffer past it must hold pad_id, not zeros
  ref = sampling.generate(model, params, PROMPTS, N, temperature=0.0, stop_ids=[stop], pad_id=tok.pad_id)
  out = engine.rollout(model, params, tok, PROMPTS, N, temperature=0.0, stop_ids=[stop])
  np.testing.assert_array_equal(out.lengths_B, np.asarray(ref.lengths))
  assert out.lengths_B[0] <= 4 and (out.tokens_BN[0, 4:] == tok.pad_id).all()
  np.testing.assert_array_equal(out.tokens_BN, np.asarray(ref.tokens))


def test_group_rows_share_one_prefill():
  model, params = make()
  tok = ByteTokenizer()
  G = 3
  out = engine.rollout(model, params, tok, PROMPTS[:2], N, samples_per_prompt=G, temperature=1.0, seed=7)
  ref = sampling.generate(model, params, [p for p in PROMPTS[:2] for _ in range(G)], N, temperature=1.0,
                          seed=7, stop_ids=[tok.special_ids["<|im_end|>"], tok.eos_id], pad_id=tok.pad_id)
  np.testing.assert_array_equal(out.tokens_BN, np.asarray(ref.tokens))
  assert len({tuple(r) for r in out.tokens_BN[:G].tolist()}) > 1  # samples differ within a group


def test_truncated_outputs_and_limits():
  model, params, tok, callers = calling_setup()
  out = engine.rollout(model, params, tok, PROMPTS, N, tools={"python": lambda a: "x" * 500},
                       temperature=0.0, max_tool_tokens=8)
  call = out.calls[0]
  assert call.truncated
  tokens, forced = engine.sequence_of(out, call.row)
  assert sum(forced) <= 8 and tokens[forced.index(True) + sum(forced) - 1] == tok.special_ids["<|output_end|>"]
  assert out.lengths_B.max() <= N
  # A tool that raises is the model's observation, not the run's end.
  out = engine.rollout(model, params, tok, PROMPTS, N, tools={"python": lambda a: 1 / 0}, temperature=0.0)
  assert out.calls[0].output.startswith("Error: ZeroDivisionError")
  with pytest.raises(ValueError, match="unknown tool"):
    engine.rollout(model, params, tok, PROMPTS, N, tools={"shell": lambda a: ""})


def test_sharded_rollout_matches_single_device():
  model, params, tok, callers = calling_setup()
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=2, tensor=2))
  rules = base.SHARDING_RULES
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  sharded = jax.device_put(params, nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules))
  prompts = PROMPTS * 2
  kw = dict(tools={"python": lambda a: "7"}, temperature=0.0)
  out = engine.rollout(model, sharded, tok, prompts, N, mesh=mesh, rule_pairs=rules, **kw)
  ref = engine.rollout(model, params, tok, prompts, N, **kw)
  np.testing.assert_array_equal(out.tokens_BN, ref.tokens_BN)
  np.testing.assert_array_equal(out.forced_BN, ref.forced_BN)
