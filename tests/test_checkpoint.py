"""Orbax checkpoints: round trip with the data iterator, restore onto another mesh, atomicity."""
import os

import jax
import ml_collections
import numpy as np

from configs import base
from lm import checkpoint as ckpt_lib
from lm import sharding, train
from lm import model as model_lib
from lm.data import packed as data_lib
from lm.data import shards
from lm.tokenizer import ByteTokenizer


def setup_state(mesh_kw, seed=0):
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=32)
  config = ml_collections.ConfigDict({"sharding_rules": base.SHARDING_RULES, "model": cfg})
  n = int(np.prod(list(mesh_kw.values())))
  mesh = sharding.make_mesh(base.mesh_config(**mesh_kw), jax.devices()[:n])
  model = model_lib.build(cfg)
  tx, _ = train.make_optimizer(base.optimizer_config(), 10)
  sample = {"tokens_BT": jax.ShapeDtypeStruct((8, 16), np.int32)}
  rules = sharding.rules(config)
  state_abs, state_sh = train.state_shardings(model, tx, mesh, rules, sample)
  state, _ = train.init_state(model, tx, mesh, rules, sample, seed)
  return config, state, state_abs, state_sh


def make_iter(tmp_path):
  tok = ByteTokenizer()
  d = str(tmp_path / "shards")
  if not os.path.exists(d):
    shards.write_shards((tok.encode(f"doc {i} " * 9) for i in range(100)), tok, d)
  return iter(data_lib.dataset(d, 16, 4, seed=0, shuffle=True, repeat=True, document_mask=False))


def test_roundtrip_onto_a_different_mesh(tmp_path):
  config, state, _, _ = setup_state(dict(data=1, fsdp=8, tensor=1))
  it = make_iter(tmp_path)
  for _ in range(3):
    next(it)
  ck = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=2, every=1, async_save=True)
  ck.save(7, state, it, config, ByteTokenizer())
  ck.wait()
  expected_batch = next(it)["inputs"]

  _, _, abs2, sh2 = setup_state(dict(data=2, fsdp=2, tensor=2), seed=1)
  it2 = make_iter(tmp_path)
  ck2 = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=2, every=1)
  assert ck2.latest_step() == 7
  restored = ck2.restore(7, ckpt_lib.abstract_with_shardings(abs2, sh2), it2)
  for a, b in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)
  q = restored.params["layer_0"]["attn"]["query"]["kernel"]
  assert q.sharding.mesh.shape["tensor"] == 2 and q.addressable_shards[0].data.shape == (16, 2, 8)
  np.testing.assert_array_equal(next(it2)["inputs"], expected_batch)
  cfg_json, tok_record = ck2.restore_meta(7)
  assert cfg_json["model"]["d_model"] == 32 and tok_record["vocab_size"] == ByteTokenizer().vocab_size
  assert ckpt_lib.tokenizer_from_record(tok_record, str(tmp_path / "tok")).decode([104, 105]) == "hi"
  ck.close()
  ck2.close()


def test_unfinished_save_is_invisible(tmp_path):
  """A save interrupted before its rename leaves only a tmp folder, never a 'latest' step."""
  config, state, _, _ = setup_state(dict(data=1, fsdp=1, tensor=1))
  ck = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=3, every=1, async_save=False)
  ck.save(1, state, make_iter(tmp_path), config, ByteTokenizer())
  ck.close()
  os.makedirs(tmp_path / "ckpt" / "2.orbax-checkpoint-tmp" / "state")  # what a kill mid-save leaves
  ck = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=3, every=1)
  assert ck.latest_step() == 1
  ck.close()


def test_keeps_only_the_newest(tmp_path):
  config, state, _, _ = setup_state(dict(data=1, fsdp=1, tensor=1))
  ck = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=2, every=2, async_save=False)
  it = make_iter(tmp_path)
  saved = [s for s in range(1, 9) if ck.save(s, state, it, config, ByteTokenizer())]
  ck.close()
  assert saved == [2, 4, 6, 8]
  assert sorted(int(d) for d in os.listdir(tmp_path / "ckpt") if d.isdigit()) == [6, 8]


def test_saved_processes_reads_the_data_iterator_files(tmp_path):
  """A multi-process checkpoint says how many processes wrote it: a resume with another count is
  refused with one line (lm/loop.py) instead of every checkpoint 'not loading'."""
  (tmp_path / "ck" / "7" / "data").mkdir(parents=True)
  for i in range(2):
    (tmp_path / "ck" / "7" / "data" / f"process_{i}-of-2.json").write_text("{}")
  ck = ckpt_lib.Checkpointer(str(tmp_path / "ck"), keep=2, every=1, async_save=False)
  assert ck.saved_processes(7) == 2 and ck.saved_processes(8) is None
  ck.close()
