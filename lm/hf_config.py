"""Hugging Face config.json ⇄ our `config.model`, for the families `lm.hf` reads and writes.

  model_type  what it covers                          our keys that differ from Llama style
  gpt2        GPT-2                                    learned positions, LayerNorm, GELU, biases
  llama       Llama 2/3.x (rope_type llama3), SmolLM2  tie_embeddings (Llama 3.2, SmolLM2)
              (tied), Llama with attention/mlp biases
  qwen2       Qwen2 / Qwen2.5                          qkv_bias
  qwen3       Qwen3 (dense)                            qk_norm, explicit head_dim

A reward model (`model.head='score'`) is the family's `*ForSequenceClassification`
with one label: its `score.weight` is our score kernel, and transformers reads
each row's score at its last token that is not `pad_token_id` (set on export).

Rotary rescaling (`rope_parameters`, or the older `rope_scaling` + `rope_theta`)
maps onto `model.rope_*` for rope_type default, linear, llama3 and yarn. What
we cannot run exactly is refused with a one-line error naming the config.json
field: another model_type, dynamic/longrope rotary, partial rotary, sliding
windows, activations other than SwiGLU's silu.
"""
from __future__ import annotations

import math

import ml_collections

from lm import model as model_lib
from lm.errors import UserError

FAMILIES = ("gpt2", "llama", "qwen2", "qwen3")
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM"}
# model.head='score': one-label sequence classification, the score read at the last non-pad token.
SCORE_ARCHITECTURES = {"gpt2": "GPT2ForSequenceClassification", "llama": "LlamaForSequenceClassification",
                       "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification"}


def head_from_hf(hf: dict) -> str:
  """'score' for a one-label *ForSequenceClassification folder, 'lm' otherwise."""
  if not any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or ()):
    return "lm"
  labels = len(hf.get("id2label") or {}) or hf.get("num_labels", 2)
  if labels != 1:
    _bad("id2label", f"has {labels} labels; a reward model (model.head='score') has exactly one")
  return "score"


def _bad(field: str, msg: str) -> None:
  raise UserError(f"config.json: {field} {msg}")


def _rope_from_hf(hf: dict) -> dict:
  """Our rope_* keys from rope_parameters (transformers ≥ 5) or rope_scaling + rope_theta (older files)."""
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  if rope and all(isinstance(v, dict) for v in rope.values()):
    _bad("rope_parameters", "differ per layer type; only one rotary setting for all layers is supported")
  kind = rope.get("rope_type", rope.get("type", "default"))
  if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
    _bad("partial_rotary_factor", "must be 1.0 (every head dimension rotated)")
  out = dict(rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), rope_scaling="none")
  max_pos = hf.get("max_position_embeddings", 2048)
  original = int(rope.get("original_max_position_embeddings") or hf.get("original_max_position_embeddings")
                 or max_pos)
  def need(key):
    if rope.get(key) is None:
      _bad("rope_parameters", f"lack {key!r}, which rope_type {kind!r} needs")
    return float(rope[key])
  if kind == "default":
    return out
  if kind == "linear":
    return dict(out, rope_scaling="linear", rope_factor=need("factor"))
  if kind == "llama3":
    return dict(out, rope_scaling="llama3", rope_factor=need("factor"), rope_original_max_len=original,
                rope_low_freq_factor=need("low_freq_factor"), rope_high_freq_factor=need("high_freq_factor"))
  if kind == "yarn":
    if rope.get("truncate", True) is False:
      _bad("rope_parameters.truncate", "false is not supported (yarn with floored/ceiled ramp ends only)")
    factor = float(rope.get("factor") or max_pos / original)
    attention = rope.get("attention_factor")
    if attention is None and rope.get("mscale") and rope.get("mscale_all_dim"):
      def m(s):
        return 0.1 * s * math.log(factor) + 1.0 if factor > 1 else 1.0
      attention = m(rope["mscale"]) / m(rope["mscale_all_dim"])
    return dict(out, rope_scaling="yarn", rope_factor=factor, rope_original_max_len=original,
                rope_beta_fast=float(rope.get("beta_fast") or 32), rope_beta_slow=float(rope.get("beta_slow") or 1),
                rope_attention_factor=float(attention or 0.0))
  _bad("rope_type", f"{kind!r} unsupported; supported: default, linear, llama3, yarn")


def config_from_hf(hf: dict, scan_layers: bool = False) -> ml_collections.ConfigDict:
  """A Hugging Face config.json (as a dict) → our `config.model`; refuses what we cannot run exactly."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise UserError(f"config.json: model_type {family!r} is not one of {FAMILIES} (Llama 3.x, SmolLM2: llama; "
                    f"Qwen2.5: qwen2; Qwen3: qwen3)")
  cfg = model_lib.default_config()
  if family == "gpt2":
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
      raise UserError(f"config.json: activation_function {hf['activation_function']!r} unsupported "
                       "(our GPT-2 MLP is the tanh GELU: gelu_new)")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
      raise UserError("config.json: only 1/sqrt(head_dim) attention scaling is supported")
    d = hf["n_embd"]
    cfg.update(vocab_size=hf["vocab_size"], max_len=hf["n_positions"], d_model=d,
               n_layers=hf["n_layer"], n_heads=hf["n_head"], n_kv_heads=hf["n_head"],
               d_ff=hf.get("n_inner") or 4 * d, norm_eps=hf.get("layer_norm_epsilon", 1e-5),
               tie_embeddings=hf.get("tie_word_embeddings", True))
  else:
    if hf.get("hidden_act", "silu") != "silu":
      raise UserError(f"config.json: hidden_act {hf['hidden_act']!r} unsupported (SwiGLU needs silu)")
    if hf.get("use_sliding_window"):
      raise UserError("config.json: use_sliding_window=true is not supported (full attention only)")
    if any(t != "full_attention" for t in hf.get("layer_types") or ()):
      raise UserError(f"config.json: layer_types {sorted(set(hf['layer_types']))} unsupported (full_attention only)")
    H = hf["num_attention_heads"]
    cfg.update(positions="rotary", norm="rmsnorm", mlp="swiglu",
               vocab_size=hf["vocab_size"], max_len=hf.get("max_position_embeddings", 2048),
               d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=H,
               n_kv_heads=hf.get("num_key_value_heads") or H, head_dim=hf.get("head_dim") or 0,
               d_ff=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6),
               tie_embeddings=hf.get("tie_word_embeddings", False), **_rope_from_hf(hf))
    if family == "qwen2":
      cfg.update(use_bias=False, qkv_bias=True)
    elif family == "qwen3":
      if hf.get("attention_bias"):
        raise UserError("config.json: attention_bias=true is not supported for qwen3 (Qwen3 checkpoints have none)")
      cfg.update(use_bias=False, qkv_bias=False, qk_norm=True)
    else:
      # attention_bias without mlp_bias: our use_bias adds MLP biases too, imported as zeros.
      cfg.update(use_bias=bool(hf.get("attention_bias") or hf.get("mlp_bias")), qkv_bias=False)
  cfg.scan_layers = scan_layers
  cfg.head = head_from_hf(hf)
  model_lib.validate(cfg)
  return cfg


def family_of(cfg: ml_collections.ConfigDict) -> str:
  """Which Hugging Face architecture runs our config exactly, or a one-line error."""
  if cfg.get("smear_keys"):
    raise UserError("config.model.smear_keys: no Hugging Face architecture smears its keys; "
                    "export a model trained without it")
  if (cfg.positions, cfg.norm, cfg.mlp) == ("learned", "layernorm", "gelu"):
    if (not cfg.use_bias or cfg.n_kv_heads != cfg.n_heads or cfg.qk_norm
        or model_lib.head_dim(cfg) * cfg.n_heads != cfg.d_model):
      raise UserError("config.model: GPT-2 export needs use_bias=True, n_kv_heads=n_heads, "
                      "head_dim=d_model/n_heads, qk_norm=False")
    return "gpt2"
  if (cfg.positions, cfg.norm, cfg.mlp) == ("rotary", "rmsnorm", "swiglu"):
    if cfg.qk_norm:
      if cfg.use_bias or cfg.qkv_bias:
        raise UserError("config.model: qk_norm with biases matches no exported family "
                        "(Qwen3 has neither use_bias nor qkv_bias)")
      return "qwen3"
    return "qwen2" if cfg.qkv_bias and not cfg.use_bias else "llama"
  raise UserError(f"config.model: positions={cfg.positions}, norm={cfg.norm}, mlp={cfg.mlp} "
                   "match neither GPT-2 (learned/layernorm/gelu) nor Llama (rotary/rmsnorm/swiglu)")


def _rope_to_hf(cfg: ml_collections.ConfigDict) -> dict:
  kind = cfg.rope_scaling
  out = {"rope_type": "default" if kind == "none" else kind, "rope_theta": float(cfg.rope_theta)}
  if kind != "none":
    out["factor"] = float(cfg.rope_factor)
  if kind in ("llama3", "yarn"):
    out["original_max_position_embeddings"] = int(cfg.rope_original_max_len)
  if kind == "llama3":
    out.update(low_freq_factor=float(cfg.rope_low_freq_factor), high_freq_factor=float(cfg.rope_high_freq_factor))
  if kind == "yarn":
    out.update(beta_fast=float(cfg.rope_beta_fast), beta_slow=float(cfg.rope_beta_slow))
    if cfg.rope_attention_factor:
      out["attention_factor"] = float(cfg.rope_attention_factor)
  return out


def config_to_hf(cfg: ml_collections.ConfigDict) -> dict:
  family = family_of(cfg)
  score = cfg.head == "score"
  common = dict(model_type=family, architectures=[(SCORE_ARCHITECTURES if score else ARCHITECTURES)[family]],
                vocab_size=cfg.vocab_size, tie_word_embeddings=bool(cfg.tie_embeddings), dtype="float32",
                use_cache=True)
  if score:
    common.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
  if family == "gpt2":
    return dict(common, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function="gelu_new",
                layer_norm_epsilon=cfg.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                scale_attn_weights=True, bos_token_id=None, eos_token_id=None)
  out = dict(common, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
             num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
             num_key_value_heads=cfg.n_kv_heads, head_dim=model_lib.head_dim(cfg),
             max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
             rope_parameters=_rope_to_hf(cfg), attention_dropout=0.0, bos_token_id=None, eos_token_id=None)
  if family == "llama":
    out.update(attention_bias=bool(cfg.use_bias), mlp_bias=bool(cfg.use_bias))
  if family in ("qwen2", "qwen3"):
    out.update(use_sliding_window=False)
  if family == "qwen3":
    out.update(attention_bias=False)
  return out
