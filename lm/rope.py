"""Rotary position embeddings and the long-context rescalings imported checkpoints use.

`frequencies(cfg)` gives the per-pair inverse frequencies (Dh/2,) and a scale
for cos/sin, from `model.rope_theta` and `model.rope_scaling`:

  none    θ^(-2i/Dh), the RoFormer frequencies
  linear  all frequencies divided by `rope_factor` (position interpolation)
  llama3  Llama 3.1's piecewise rule: wavelengths shorter than
          original/high_freq_factor are kept, longer than original/low_freq_factor
          divided by `rope_factor`, and the band between blended linearly in
          original/wavelength
  yarn    YaRN: per pair, a blend of interpolated (÷ factor) and original
          frequencies by a linear ramp over the pairs whose number of rotations
          within the original context lies between beta_slow and beta_fast
          (ramp ends floored/ceiled), and cos/sin scaled by
          `rope_attention_factor` (0: 0.1·ln(factor) + 1)

These follow the published definitions as Hugging Face `rope_type`s compute
them (float32), so imported Llama 3.x and Qwen long-context checkpoints match
logit for logit. The frequencies are numpy constants computed at trace time:
the config is static, so nothing of this runs per step.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

SCALINGS = ("none", "linear", "llama3", "yarn")


def _default(theta: float, dh: int) -> np.ndarray:
  return (1.0 / np.float32(theta) ** (np.arange(0, dh, 2, dtype=np.float32) / np.float32(dh))).astype(np.float32)


def _llama3(inv: np.ndarray, cfg) -> np.ndarray:
  factor, low, high = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  original = cfg.rope_original_max_len
  wavelen = (2 * math.pi / inv).astype(np.float32)
  long_wave = wavelen > original / low     # fully interpolated
  short_wave = wavelen < original / high   # kept as trained
  scaled = np.where(long_wave, inv / factor, inv)
  smooth = (original / wavelen - low) / (high - low)
  blended = (1 - smooth) * scaled / factor + smooth * scaled
  return np.where(~long_wave & ~short_wave, blended, scaled).astype(np.float32)


def _yarn(inv: np.ndarray, cfg, dh: int) -> np.ndarray:
  factor, original = cfg.rope_factor, cfg.rope_original_max_len

  def pair_of(rotations):  # the (fractional) pair index that turns `rotations` times over `original`
    return dh * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))
  lo = max(math.floor(pair_of(cfg.rope_beta_fast)), 0)
  hi = min(math.ceil(pair_of(cfg.rope_beta_slow)), dh - 1)
  hi = hi + 0.001 if lo == hi else hi  # a zero-width ramp would divide by zero
  ramp = np.clip((np.arange(dh // 2, dtype=np.float32) - lo) / (hi - lo), 0, 1)
  keep = 1 - ramp                      # 1: original frequency (fast pairs), 0: interpolated
  return (inv / factor * (1 - keep) + inv * keep).astype(np.float32)


def attention_scale(cfg: ml_collections.ConfigDict) -> float:
  """The factor on cos and sin (1 except for yarn)."""
  if cfg.rope_scaling != "yarn":
    return 1.0
  if cfg.rope_attention_factor:
    return float(cfg.rope_attention_factor)
  return 0.1 * math.log(cfg.rope_factor) + 1.0 if cfg.rope_factor > 1 else 1.0


def frequencies(cfg: ml_collections.ConfigDict, dh: int) -> np.ndarray:
  """Inverse frequency of each rotated pair, (dh/2,) float32."""
  inv = _default(cfg.rope_theta, dh)
  if cfg.rope_scaling == "linear":
    return (inv / np.float32(cfg.rope_factor)).astype(np.float32)
  if cfg.rope_scaling == "llama3":
    return _llama3(inv, cfg)
  if cfg.rope_scaling == "yarn":
    return _yarn(inv, cfg, dh)
  return inv


def apply(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq_H: np.ndarray, scale: float = 1.0) -> jax.Array:
  """Rotary embedding, half-split convention (as in Llama/Qwen checkpoints), in float32."""
  angles_BTH = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq_H)
  sin = (jnp.sin(angles_BTH) * scale)[:, :, None, :]
  cos = (jnp.cos(angles_BTH) * scale)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)
