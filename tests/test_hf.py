"""Parity with code nobody here wrote: transformers' GPT-2, Llama (GQA) and Qwen2 (q/k/v biases).

Small random `transformers` models are saved with `save_pretrained` (no download),
imported with lm.hf, and compared logit by logit (float32, 1e-4) and token by
token (greedy, 32 new tokens, against `generate`). Export goes the other way and
is loaded back by `from_pretrained`.
"""
import json
import os

import jax
import numpy as np
import pytest

from lm import hf
from lm import model as model_lib
from lm import sampling, sharding

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128


def hf_model(family: str, **overrides):
  # No bos/eos: generate must not stop or mask early, whatever the random model says.
  overrides = dict(bos_token_id=None, eos_token_id=None, **overrides)
  torch.manual_seed({"gpt2": 0, "llama": 1, "qwen2": 2}[family])
  # A wider init than 0.02 makes the next-token distribution peaked, so greedy
  # choices are not decided by float32 rounding.
  if family == "gpt2":
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                  initializer_range=0.2, **overrides)
    model = transformers.GPT2LMHeadModel(cfg)
  elif family == "llama":
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, initializer_range=0.2, **overrides)
    model = transformers.LlamaForCausalLM(cfg)
  else:
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, tie_word_embeddings=True,
                                   initializer_range=0.2, **overrides)
    model = transformers.Qwen2ForCausalLM(cfg)
  return model.eval()


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def saved(request, tmp_path_factory):
  family = request.param
  model = hf_model(family)
  folder = str(tmp_path_factory.mktemp(family))
  model.save_pretrained(folder)
  assert not any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(folder))
  return family, model, folder


def torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def prompts(B=3, T=10, seed=0):
  return np.random.default_rng(seed).integers(0, VOCAB, (B, T)).astype(np.int32)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_imported_logits_match_transformers(saved, scan_layers):
  family, model, folder = saved
  cfg, params = hf.import_checkpoint(folder, scan_layers=scan_layers)
  assert cfg.scan_layers == scan_layers
  if family == "qwen2":
    assert cfg.qkv_bias and not cfg.use_bias and cfg.tie_embeddings
  if family == "llama":
    assert (cfg.n_heads, cfg.n_kv_heads) == (4, 2)
  tokens = prompts()
  ours = np.asarray(model_lib.build(cfg).apply({"params": params}, tokens))
  ref = torch_logits(model, tokens)
  assert np.abs(ref).std() > 0.5, "logits too flat for 1e-4 to mean anything"
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_state_dict_converter_matches_file_import(saved):
  family, model, folder = saved
  tensors = {k: v.numpy() for k, v in model.state_dict().items()}
  cfg, params = hf.from_state_dict(tensors, model.config.to_dict())
  _, from_file = hf.import_checkpoint(folder)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, from_file)


def test_greedy_generation_matches_transformers_generate(saved):
  family, model, folder = saved
  cfg, params = hf.import_checkpoint(folder)
  tokens = prompts(B=2, T=8, seed=1)
  with torch.no_grad():
    ref = model.generate(torch.as_tensor(tokens, dtype=torch.long), max_new_tokens=32, do_sample=False,
                         pad_token_id=0).numpy()[:, 8:]
  out = sampling.generate(model_lib.build(cfg), params, tokens.tolist(), max_new_tokens=32,
                          temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_export_loads_in_transformers_with_same_logits(saved, tmp_path, scan_layers):
  family, _, folder = saved
  cfg, params = hf.import_checkpoint(folder, scan_layers=scan_layers)
  hf.export_checkpoint(params, cfg, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(loaded).__name__ == hf._ARCHITECTURES[family]
  tokens = prompts(seed=2)
  ours = np.asarray(model_lib.build(cfg).apply({"params": params}, tokens))
  np.testing.assert_allclose(torch_logits(loaded, tokens), ours, atol=1e-4, rtol=0)


def test_sharded_import_places_each_shard(saved):
  """On a (data 2, fsdp 2, tensor 2) mesh the loaded arrays carry the rule shardings, same values."""
  family, _, folder = saved
  from configs import base
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=2, tensor=2))
  rule_pairs = base.SHARDING_RULES
  cfg, params = hf.import_checkpoint(folder, scan_layers=True, mesh=mesh, rule_pairs=rule_pairs)
  _, plain = hf.import_checkpoint(folder, scan_layers=True)
  q = params["layers"]["attn"]["query"]["kernel"]            # (L, D, H, Dh): embed→fsdp, heads→tensor
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, plain)


def test_llama_attention_bias_without_mlp_bias_imports_exactly(tmp_path):
  model = hf_model("llama", attention_bias=True)
  model.save_pretrained(str(tmp_path))
  cfg, params = hf.import_checkpoint(str(tmp_path))
  assert cfg.use_bias
  np.testing.assert_array_equal(np.asarray(params["layer_0"]["mlp"]["up"]["bias"]), 0.0)
  tokens = prompts()
  ours = np.asarray(model_lib.build(cfg).apply({"params": params}, tokens))
  np.testing.assert_allclose(ours, torch_logits(model, tokens), atol=1e-4, rtol=0)


def test_unsupported_checkpoints_fail_with_one_line_reasons(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.import_checkpoint(str(tmp_path))
  llama = hf_model("llama").config.to_dict()
  llama["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
  with pytest.raises(ValueError, match="rope"):
    hf.config_from_hf(llama)
  with pytest.raises(ValueError, match="model_type"):
    hf.config_from_hf({"model_type": "bert"})
  (tmp_path / "config.json").write_text(json.dumps(hf_model("gpt2").config.to_dict()))
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(FileNotFoundError, match="safetensors"):
    hf.import_checkpoint(str(tmp_path))
