"""In-context copying probe and the copy drills that teach it."""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np

from configs import base

from lm import model as model_lib
from lm import probes, sharding
from lm.prep import copy_drills
from lm.tasks import spelling


class _Copier:
  """Predicts token t + 1 as the token `period` positions before it (a perfect copier after one period)."""

  def __init__(self, vocab: int, period: int):
    self.vocab, self.period = vocab, period

  def apply(self, variables, tokens_BT):
    B, T = tokens_BT.shape
    src = jnp.clip(jnp.arange(T) + 1 - self.period, 0, T - 1)
    onehot = jax.nn.one_hot(tokens_BT[:, src], self.vocab)
    known = (jnp.arange(T) + 1 >= self.period)[None, :, None]
    return jnp.where(known, 30.0 * onehot, 0.0)


def test_copy_gain_tells_a_copier_from_a_model_that_cannot_copy():
  copier = probes.copy_gain(_Copier(512, 48), {}, 512, length=48)
  assert copier["second"] < 0.01 and copier["gain"] > 5.0  # first copy: uniform, log(512) = 6.2 nats
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=512, max_len=128, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64)
  m = model_lib.build(cfg)
  params = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  fresh = probes.copy_gain(m, params, 512, length=48)
  assert abs(fresh["gain"]) < 0.1 and np.isfinite(fresh["first"])  # an untrained model copies nothing
  mesh = sharding.make_mesh(base.mesh_config(data=1, fsdp=-1))  # 8 virtual devices: 3 rows become 8
  on_mesh = probes.copy_gain(m, params, 512, length=48, rows=3, mesh=mesh)
  assert np.allclose([on_mesh["first"], on_mesh["second"]], [fresh["first"], fresh["second"]], atol=1e-4)


def test_drills_use_new_made_up_words_again_and_again():
  docs = copy_drills.documents(50, seed=0)
  assert docs == copy_drills.documents(50, seed=0) and docs != copy_drills.documents(50, seed=1)
  seen = collections.Counter()
  for doc in docs:
    listed = doc.split(": ", 1)[1].split(".", 1)[0].split(", ")
    assert len(listed) == copy_drills.WORDS_PER_DOC
    for w in listed:
      seen[w] += 1
      assert doc.count(w) >= 4 and f'"{w}"' in doc and f" {w}" in doc  # bare and quoted, listed twice
  assert max(seen.values()) == 1 and not set(seen) & set(spelling.WORDS)  # new in every document
  assert not set(seen) & set(spelling.made_up(2000))  # not the spelling task's own made-up words either


def test_drill_words_can_be_glued_from_a_tokenizers_pieces():
  from lm.tokenizer import ByteTokenizer

  class Pieces:  # a vocabulary with a few alphabetic pieces, with and without a leading space
    vocab_size = 6

    def decode(self, ids):
      return ["<s>", " air", "port", "ion", "x", "1a"][ids[0]]

  assert copy_drills.word_pieces(Pieces()) == ["air", "ion", "port"]
  assert copy_drills.word_pieces(ByteTokenizer()) == []  # single bytes are not pieces
  docs = copy_drills.documents(10, seed=3, pieces=["air", "ion", "port", "ment", "ur"])
  words = [w for d in docs for w in d.split(": ", 1)[1].split(".", 1)[0].split(", ")]
  assert len(set(words)) == len(words) == 10 * copy_drills.WORDS_PER_DOC
  assert all(re.fullmatch("(air|ion|port|ment|ur){2,3}", w) for w in words)
