"""lm.init_from: parameters only (no optimizer moments) from a workdir or an HF folder, onto a mesh;
contradicting overrides fail; the per-example forward step keeps the batch sharding."""
import os

import grain
import jax
import ml_collections
import numpy as np
import pytest

from configs import base
from lm import checkpoint as ckpt_lib
from lm import hf, init_from, loop, losses, sharding, train
from lm.errors import UserError
from lm.tokenizer import ByteTokenizer

B, T = 8, 16


def tiny_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = base.model_config("llama_tiny")
  c.model.update(vocab_size=320, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=32)
  c.opt = base.optimizer_config(lr=1e-2)
  c.sharding_rules = base.SHARDING_RULES
  return c


def make_stage(model_cfg, mesh_kw=None, forward=None):
  mesh_kw = mesh_kw or dict(data=1, fsdp=1, tensor=1)
  n = int(np.prod(list(mesh_kw.values())))
  mesh = sharding.make_mesh(base.mesh_config(**mesh_kw), jax.devices()[:n])
  return loop.build_stage(model_cfg, base.optimizer_config(lr=1e-2), 10, mesh, base.SHARDING_RULES,
                          losses.next_token, micro_batch=B, seq_len=T, forward=forward)


def batch(vocab=320, seed=0):
  tok = np.random.default_rng(seed).integers(0, vocab, (B, T + 1)).astype(np.int32)
  mask = np.ones((B, T), np.float32)
  mask[:, :3] = 0.0
  return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "loss_mask": mask}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A run's checkpoint after two real steps (so optimizer moments are non-zero)."""
  config = tiny_config()
  stage = make_stage(config.model)
  state = stage.init(0)
  for i in range(2):
    state, _ = stage.train_step(state, sharding.host_batch_to_global(batch(seed=i), stage.mesh), jax.random.key(0))
  wd = tmp_path_factory.mktemp("run")
  data_iter = iter(grain.MapDataset.source(list(range(10))).to_iter_dataset())
  ck = ckpt_lib.Checkpointer(os.path.join(wd, "checkpoints"), keep=2, every=1, async_save=False)
  ck.save(2, state, data_iter, config, ByteTokenizer(), force=True)
  ck.close()
  return str(wd), jax.device_get(state.params)


def source_cfg(**kw):
  return ml_collections.ConfigDict(dict({"workdir": "", "step": -1, "hf_dir": ""}, **kw))


def test_workdir_source_restores_parameters_only_onto_a_mesh(workdir):
  wd, want = workdir
  src = init_from.resolve(source_cfg(workdir=wd))
  assert src.kind == "workdir" and src.step == 2 and src.tokenizer.vocab_size == ByteTokenizer().vocab_size
  stage_cfg = base.inherited_model_config()
  model_cfg = init_from.merge_model_config(stage_cfg, src)
  assert model_cfg.d_model == 32 and model_cfg.n_kv_heads == 2
  stage = make_stage(model_cfg, dict(data=2, fsdp=2, tensor=2))
  params = init_from.load_params(src, model_cfg, stage.abstract_state().params)
  # The restored tree is the parameter tree: no step, no optimizer moments.
  assert jax.tree.structure(params) == jax.tree.structure(want)
  for got, exp in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(got), exp)
  for got, sh in zip(jax.tree.leaves(params), jax.tree.leaves(stage.state_sh.params)):
    assert got.sharding == sh
  # A fresh optimizer around them: step 0, zero moments.
  state = stage.from_params(params)
  assert int(state.step) == 0
  assert all(float(np.abs(np.asarray(x)).max()) == 0.0 for x in jax.tree.leaves(state.opt_state)
             if np.asarray(x).dtype == np.float32)


def test_scanned_stage_from_an_unscanned_run(workdir):
  """scan_layers is a layout, not architecture: the layers are stacked on load."""
  wd, want = workdir
  src = init_from.resolve(source_cfg(workdir=wd))
  stage_cfg = base.inherited_model_config()
  stage_cfg.scan_layers = True
  model_cfg = init_from.merge_model_config(stage_cfg, src)
  stage = make_stage(model_cfg, dict(data=1, fsdp=2, tensor=1))
  params = init_from.load_params(src, model_cfg, stage.abstract_state().params)
  assert set(params) == {"embed", "layers", "ln_final", "lm_head"}
  for i in range(2):
    for a, b in zip(jax.tree.leaves(params["layers"]), jax.tree.leaves(want[f"layer_{i}"])):
      np.testing.assert_array_equal(np.asarray(a)[i], b)


def test_contradicting_override_is_one_line(workdir):
  src = init_from.resolve(source_cfg(workdir=workdir[0]))
  stage_cfg = base.inherited_model_config()
  stage_cfg.d_model = 64
  with pytest.raises(UserError, match=r"config.model.d_model=64 contradicts the init_from source") as e:
    init_from.merge_model_config(stage_cfg, src)
  assert "\n" not in str(e.value)
  stage_cfg.d_model = 32  # agreeing is fine; run-time keys are the stage's own
  stage_cfg.dtype = "bfloat16"
  assert init_from.merge_model_config(stage_cfg, src).dtype == "bfloat16"


@pytest.mark.parametrize("kw,needle", [
    ({}, "set exactly one of workdir"),
    ({"workdir": "/no/such/run"}, "config.init_from.workdir: no checkpoints"),
    ({"hf_dir": "/no/such/folder"}, "config.init_from.hf_dir: no such folder"),
])
def test_bad_sources_are_user_errors(kw, needle):
  with pytest.raises(UserError, match=needle):
    init_from.resolve(source_cfg(**kw))


def test_missing_step_names_the_steps_there(workdir):
  with pytest.raises(UserError, match=r"no finished checkpoint 7 .*\[2\]"):
    init_from.resolve(source_cfg(workdir=workdir[0], step=7))


def test_hf_folder_source(tmp_path, workdir):
  cfg = tiny_config().model
  params = workdir[1]
  hf.export_checkpoint(params, cfg, str(tmp_path))
  src = init_from.resolve(source_cfg(hf_dir=str(tmp_path)))
  assert src.kind == "hf" and src.tokenizer is None
  model_cfg = init_from.merge_model_config(base.inherited_model_config(), src)
  stage = make_stage(model_cfg, dict(data=1, fsdp=4, tensor=2))
  got = init_from.load_params(src, model_cfg, stage.abstract_state().params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6)


def test_forward_step_is_per_example_and_sharded_like_the_batch():
  cfg = tiny_config().model
  one = make_stage(cfg, forward=losses.token_logprobs)
  eight = make_stage(cfg, dict(data=4, fsdp=2, tensor=1), forward=losses.token_logprobs)
  params = one.init(0).params
  b = batch()
  out1 = one.forward_step(params, sharding.host_batch_to_global(b, one.mesh))
  params8 = jax.device_put(jax.device_get(params), eight.state_sh.params)
  out8 = eight.forward_step(params8, sharding.host_batch_to_global(b, eight.mesh))
  assert out8["logprobs"].shape == (B, T) and out8["tokens"].shape == (B,)
  assert out8["logprobs"].sharding.spec[0] is not None  # rows stay on their devices
  np.testing.assert_allclose(np.asarray(out8["logprobs"]), np.asarray(out1["logprobs"]), atol=1e-5)
  # Per-example log-probs sum to the eval step's loss (same model, same mask).
  ev = one.eval_step(params, sharding.host_batch_to_global(b, one.mesh))
  np.testing.assert_allclose(-float(np.asarray(out1["logprobs"]).sum()), float(ev["loss"]), rtol=1e-5)
  assert float(np.asarray(out1["tokens"]).sum()) == float(ev["weight"])


def test_packed_conversations_never_see_each_other():
  """Gradient of one segment's loss w.r.t. another segment's (embedded) tokens is exactly zero."""
  import jax.numpy as jnp
  from lm import model as model_lib
  cfg = tiny_config().model
  model = model_lib.build(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 320, (1, T)), jnp.int32)
  seg = jnp.asarray([[1] * 6 + [2] * 7 + [0] * 3], jnp.int32)
  pos = jnp.asarray([list(range(6)) + list(range(7)) + [0] * 3], jnp.int32)
  variables = model.init(jax.random.key(0), tokens)
  perturb = jnp.zeros((1, T, cfg.d_model), jnp.float32)

  def seg2_loss(p):
    logits = model.apply({"params": variables["params"], "perturbations": {"embedded": p}}, tokens, pos, seg)
    return jnp.sum(jax.nn.log_softmax(logits)[0, 6:13, 0])

  g = jax.grad(seg2_loss)(perturb)
  assert float(jnp.abs(g[0, :6]).max()) == 0.0
  assert float(jnp.abs(g[0, 6:13]).max()) > 0.0
