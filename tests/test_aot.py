"""The accelerator configs compile ahead of time on an 8-device virtual mesh with FSDP, within
25% of the per-device memory the README states."""
import os
import re

import jax
import pytest

from configs import pretrain
from lm import aot, sharding

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_peak_gb(pattern: str) -> float:
  """The per-device peak (GB) the README states, from the line matching `pattern` (one group)."""
  with open(README) as f:
    m = re.search(pattern, f.read())
  assert m, f"README.md no longer states {pattern!r}"
  return float(m.group(1))


@pytest.mark.parametrize("arg,max_gb", [("gpt2_124m", 40.0), ("llama_1b", 70.0)])
def test_compiles_with_fsdp_and_fits(arg, max_gb):
  config = pretrain.get_config(arg)
  assert config.mesh.fsdp == -1
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:8])
  compiled, stats = aot.compile_train_step(config, mesh)
  print(f"{arg}: {stats}")
  assert stats["mesh"]["fsdp"] == 8
  # FSDP: each device holds 1/8 of parameters + Adam moments (3 float32 copies).
  per_device_state_gb = stats["params_billions"] * 4 * 3 / 8
  assert stats["argument_gb_per_device"] == pytest.approx(per_device_state_gb, rel=0.05)
  assert stats["peak_gb_per_device"] < max_gb  # fits an 80 GB accelerator with headroom
  stated = readme_peak_gb(rf"\| {arg} \(.*\| ([\d.]+) GB \|\n")
  assert stats["peak_gb_per_device"] == pytest.approx(stated, rel=0.25), "README's AOT table"
  assert compiled is not None


QWEN25_1P5B = {  # config.json of Qwen/Qwen2.5-1.5B (the weights are not needed to compile)
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 1536,
    "intermediate_size": 8960, "max_position_embeddings": 131072, "num_attention_heads": 12,
    "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "use_sliding_window": False, "tie_word_embeddings": True,
    "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": 151643, "torch_dtype": "bfloat16"}


def test_sft_real_setting_compiles_with_packed_batches(tmp_path):
  """configs/sft.py:qwen_gsm8k: SFT of Qwen2.5-1.5B (architecture from its config.json through
  init_from; bf16, full remat, FSDP, packed rows with segment ids and positions) compiles on 8
  virtual devices; its memory is what the README states."""
  import json
  from configs import sft
  from lm import init_from, losses
  (tmp_path / "config.json").write_text(json.dumps(QWEN25_1P5B))
  config = sft.get_config("qwen_gsm8k")
  config.init_from.hf_dir = str(tmp_path)
  assert config.mesh.fsdp == -1 and config.model.dtype == "bfloat16"
  config.model = init_from.merge_model_config(config.model, init_from.resolve(config.init_from))
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:8])
  _, stats = aot.compile_train_step(config, mesh, losses.next_token, aot.PACKED_BATCH)
  print(f"sft qwen_gsm8k: {stats}")
  assert config.model.d_model == 1536 and config.model.n_kv_heads == 2 and config.model.qkv_bias
  assert stats["mesh"]["fsdp"] == 8
  assert stats["params_billions"] == pytest.approx(1.54, abs=0.01)
  per_device_state_gb = stats["params_billions"] * 4 * 3 / 8
  assert stats["argument_gb_per_device"] == pytest.approx(per_device_state_gb, rel=0.05)
  assert stats["peak_gb_per_device"] < 70.0
  stated = readme_peak_gb(r"GB of state and ([\d.]+) GB peak per device")
  assert stats["peak_gb_per_device"] == pytest.approx(stated, rel=0.25), "README's qwen_gsm8k figure"


def test_reward_model_real_setting_compiles(tmp_path):
  """configs/reward_model.py:llama32_1b: a reward model from Llama-3.2-1B's config.json (the scalar head
  in place of the tied LM head; bf16, full remat, FSDP over 8 virtual devices; the ranking loss on
  64 responses of 2048 tokens) compiles through experiments.compile's path."""
  import json
  from configs import hf_models, reward_model as rm_config
  from lm import init_from, reward_model
  (tmp_path / "config.json").write_text(json.dumps(hf_models.LLAMA_3_2_1B))
  config = rm_config.get_config("llama32_1b")
  config.init_from.hf_dir = str(tmp_path)
  config.model = init_from.merge_model_config(config.model, init_from.resolve(config.init_from))
  assert config.model.head == "score" and config.model.tie_embeddings and config.mesh.fsdp == -1
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:8])
  _, stats = reward_model.compile_train_step(config, mesh)
  print(f"reward_model llama32_1b: {stats}")
  assert stats["mesh"]["fsdp"] == 8
  assert stats["params_billions"] * 1e9 == pytest.approx(1_235_814_400 + 2048)  # Llama-3.2-1B + a D → 1 head
  assert stats["argument_gb_per_device"] == pytest.approx(stats["params_billions"] * 12 / 8, rel=0.05)
  assert stats["peak_gb_per_device"] < 40.0


@pytest.mark.slow  # ~50 s of compilation on 2 cores
def test_grpo_real_setting_compiles(tmp_path):
  """configs/grpo.py:qwen_gsm8k: GRPO of Qwen2.5-1.5B on GSM8K (64 prompts × 16 samples of up to 1024
  tokens, bf16, full remat, FSDP, 16 microbatches, KL to the reference) compiles on 8 virtual devices."""
  import json
  from configs import grpo
  from lm import init_from
  (tmp_path / "config.json").write_text(json.dumps(QWEN25_1P5B))
  config = grpo.get_config("qwen_gsm8k")
  config.init_from.hf_dir = str(tmp_path)
  config.model = init_from.merge_model_config(config.model, init_from.resolve(config.init_from))
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:8])
  _, stats = aot.compile_grpo_step(config, mesh)
  print(f"grpo qwen_gsm8k: {stats}")
  assert stats["mesh"]["fsdp"] == 8 and config.train.batch_size == 64 * 16
  assert stats["peak_gb_per_device"] < 70.0
  stated = readme_peak_gb(r"GRPO[^\n]*?([\d.]+) GB peak per device")
  assert stats["peak_gb_per_device"] == pytest.approx(stated, rel=0.25), "README's grpo qwen_gsm8k figure"
