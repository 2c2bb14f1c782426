"""The accelerator configs compile ahead of time on an 8-device virtual mesh with FSDP."""
import jax
import pytest

from configs import pretrain
from lm import aot, sharding


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
  assert compiled is not None


def test_sft_real_setting_compiles_with_packed_batches():
  """configs/sft.py:llama_gsm8k: a Llama-3.2-1B-shaped SFT step (bf16, FSDP, packed rows with
  segment ids and positions) compiles on 8 virtual devices; its memory is what the README states."""
  from configs import sft
  from lm import losses
  config = sft.get_config("llama_gsm8k")
  assert config.mesh.fsdp == -1 and config.model.dtype == "bfloat16"
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:8])
  _, stats = aot.compile_train_step(config, mesh, losses.next_token, aot.PACKED_BATCH)
  print(f"sft llama_gsm8k: {stats}")
  assert stats["mesh"]["fsdp"] == 8
  per_device_state_gb = stats["params_billions"] * 4 * 3 / 8
  assert stats["argument_gb_per_device"] == pytest.approx(per_device_state_gb, rel=0.05)
  assert stats["peak_gb_per_device"] < 70.0
