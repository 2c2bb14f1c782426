"""Decoder-only transformer in Flax Linen, used functionally (`init` / `apply`).

One module covers the two families the field trains, chosen by config keys,
not by subclasses:

  GPT-2 style: positions='learned', norm='layernorm', mlp='gelu',
               tie_embeddings=True, use_bias=True
  Llama style: positions='rotary', norm='rmsnorm', mlp='swiglu',
               tie_embeddings=False, use_bias=False, n_kv_heads < n_heads (GQA)
  (Qwen2 is Llama style with qkv_bias=True; Qwen3 adds qk_norm and an explicit
  head_dim; Llama 3.x adds rope_scaling='llama3'; SmolLM2 ties the embeddings.)

`head` picks what the final normed states feed: 'lm' gives next-token logits
(B, T, V); 'score' gives one scalar per position (B, T) from a D → 1 kernel and
creates no vocabulary matrix (a reward model: lm.losses.ranking reads each row's
score at its last real token). With tied embeddings the input embedding stays.

Parameters are float32 and carry logical axis names (`nn.with_logical_partitioning`);
the compute dtype is `config.dtype`. Main activations are pinned with
`nn.with_logical_constraint`, so one set of rules in the config shards the
whole network over (data, fsdp, tensor). Layers can be scanned (`scan_layers`,
parameters gain a leading 'layers' axis) and rematerialised (`remat`).

Incremental decoding passes a key/value cache (`lm.kv_cache`) in and gets it
back: `apply(..., tokens_BT, positions_BT, cache=c, cache_index=i, cache_start_B=s)`
writes the new tokens' keys/values at slots i.. and attends over the whole
cache; without `cache` nothing changes.

Shapes in names: B batch, T length, S cache slots, D model width, H query heads,
K kv heads, Dh head width, F MLP width, V vocabulary.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lm.errors import UserError
from lm import kv_cache, ops, rope

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
HEADS = ("lm", "score")
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def head_dim(cfg: ml_collections.ConfigDict) -> int:
  """`model.head_dim`, where 0 means d_model // n_heads."""
  return cfg.head_dim or cfg.d_model // cfg.n_heads


def _init(std: float):
  return nn.initializers.normal(stddev=std)


class Linear(nn.Module):
  """x[..., *in] · W[*in, *out] (+ b[*out]) with logically named axes.

  Written out instead of nn.DenseGeneral so multi-axis kernels (D → H×Dh,
  H×Dh → D) are created in their final shape and their names always match.
  """
  features: tuple[int, ...]
  axes: tuple[str | None, ...]
  cfg: ml_collections.ConfigDict
  std: float
  use_bias: bool
  n_in: int = 1

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.n_in:]
    kernel = self.param("kernel", nn.with_logical_partitioning(_init(self.std), self.axes),
                        (*in_shape, *self.features), jnp.float32)
    dtype = DTYPES[self.cfg.dtype]
    y = ops.matmul(x.astype(dtype), kernel.astype(dtype), self.n_in, self.cfg.weight_grad)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.n_in:]),
                        self.features, jnp.float32)
      y = y + bias.astype(dtype)
    return y


def _dense(features, axes, name, cfg, std, use_bias):
  features = features if isinstance(features, tuple) else (features,)
  n_in = len(axes) - len(features)
  return Linear(features, axes, cfg, std, use_bias, n_in, name=name)


class Norm(nn.Module):
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    x32 = x.astype(jnp.float32)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), jnp.float32)
    if cfg.norm == "rmsnorm":
      y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + cfg.norm_eps) * scale
    else:
      mean = jnp.mean(x32, -1, keepdims=True)
      var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                        (x.shape[-1],), jnp.float32)
      y = (x32 - mean) * jax.lax.rsqrt(var + cfg.norm_eps) * scale + bias
    return y.astype(DTYPES[cfg.dtype])


def attention_mask(segment_ids_BT: Array | None, T: int) -> ops.SegmentMask | None:
  """Causal mask that also keeps packed documents from seeing each other.

  Segments are contiguous runs (how packed rows are laid out), so besides the
  dense mask each query's segment start is given, for kernels that skip the
  keys before it.
  """
  if segment_ids_BT is None:
    return None
  causal_TT = jnp.tril(jnp.ones((T, T), jnp.bool_))
  same_BTT = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  t_T = jnp.arange(T, dtype=jnp.int32)
  first_BT = jnp.concatenate([jnp.ones_like(segment_ids_BT[:, :1], jnp.bool_),
                              segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]], axis=1)
  starts_BT = jax.lax.cummax(jnp.where(first_BT, t_T, 0), axis=1)
  return ops.SegmentMask((same_BTT & causal_TT)[:, None, :, :], starts_BT)


def previous_ok(segment_mask: ops.SegmentMask | None, T: int, B: int) -> Array:
  """(B, T): whether position t has a previous token in its own document (for `smear_keys`)."""
  t_T = jnp.arange(T, dtype=jnp.int32)
  if segment_mask is None:
    return jnp.broadcast_to(t_T > 0, (B, T))
  return t_T[None, :] > segment_mask.starts_BT


def smear(k_BXKD: Array, logit_K: Array, prev_ok_BX: Array, axis: int) -> Array:
  """Smeared keys (Olsson et al., 2022): k'_t = k_t + σ(a)·(k_{t−1} − k_t), one learned a per kv head.

  A key then also says which token came before it, so one head can find "the token after the
  last occurrence of the current one" (an induction head) without a second, previous-token head
  in an earlier layer: in-context copying forms far earlier in training. `axis` is the sequence
  axis of k (1 for (B, T, K, Dh) activations, 2 for the (B, K, S, Dh) cache); the first token of
  each document (`prev_ok_BX` false) keeps its own key.
  """
  k32 = k_BXKD.astype(jnp.float32)
  prev = jnp.roll(k32, 1, axis=axis)
  ok_shape = [1] * k32.ndim
  ok_shape[0], ok_shape[axis] = prev_ok_BX.shape
  prev = jnp.where(prev_ok_BX.reshape(ok_shape), prev, k32)
  mix_shape = [1] * k32.ndim
  mix_shape[2 if axis == 1 else 1] = logit_K.shape[0]
  mix = jax.nn.sigmoid(logit_K.astype(jnp.float32)).reshape(mix_shape)
  return (k32 + mix * (prev - k32)).astype(k_BXKD.dtype)


class Attention(nn.Module):
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x_BTD, positions_BT, mask_B1TT, cache=None, cache_index=None, prev_ok_BX=None):
    """→ (out_BTD, cache); with a cache, `mask_B1TT` is the (B, 1, T, S) mask over its slots.

    `prev_ok_BX` (only with `smear_keys`): which positions (B, T), or cache slots (B, S), have a
    previous token of their own row and document."""
    cfg = self.cfg
    H, K, Dh = cfg.n_heads, cfg.n_kv_heads, head_dim(cfg)
    std = cfg.init_std
    qkv_bias = cfg.use_bias or cfg.qkv_bias
    q_BTHD = _dense((H, Dh), ("embed", "heads", "head_dim"), "query", cfg, std, qkv_bias)(x_BTD)
    k_BTKD = _dense((K, Dh), ("embed", "kv_heads", "head_dim"), "key", cfg, std, qkv_bias)(x_BTD)
    v_BTKD = _dense((K, Dh), ("embed", "kv_heads", "head_dim"), "value", cfg, std, qkv_bias)(x_BTD)
    if cfg.qk_norm:
      # Per head, before rotary (Qwen3): bounds q·k whatever the projections' scale.
      q_BTHD = Norm(cfg, name="q_norm")(q_BTHD)
      k_BTKD = Norm(cfg, name="k_norm")(k_BTKD)
    if cfg.positions == "rotary":
      inv_freq, scale = rope.frequencies(cfg, Dh), rope.attention_scale(cfg)
      q_BTHD = rope.apply(q_BTHD, positions_BT, inv_freq, scale)
      k_BTKD = rope.apply(k_BTKD, positions_BT, inv_freq, scale)
    q_BTHD = nn.with_logical_constraint(q_BTHD, ("batch", "length", "act_heads", None))
    k_BTKD = nn.with_logical_constraint(k_BTKD, ("batch", "length", "act_kv_heads", None))
    v_BTKD = nn.with_logical_constraint(v_BTKD, ("batch", "length", "act_kv_heads", None))
    if cfg.smear_keys:
      logit_K = self.param("smear", nn.with_logical_partitioning(nn.initializers.zeros, ("kv_heads",)),
                           (K,), jnp.float32)
    if cache is not None:
      # The cache keeps the unsmeared keys, smeared over all its slots at each step: exact whatever
      # order rows write in (the engine's paused rows rewrite their slot; the next real token
      # overwrites it), at the cost of one more pass over the keys per step.
      cache = kv_cache.write(cache, k_BTKD, v_BTKD, cache_index)
      read = cache if not cfg.smear_keys else dict(cache, k=smear(cache["k"], logit_K, prev_ok_BX, axis=2))
      out_BTHD = kv_cache.attend(q_BTHD, read, mask_B1TT)
    else:
      if cfg.smear_keys:
        k_BTKD = smear(k_BTKD, logit_K, prev_ok_BX, axis=1)
      out_BTHD = ops.attention(q_BTHD, k_BTKD, v_BTKD, mask_B1TT, impl=cfg.attention)
    out_BTHD = nn.with_logical_constraint(out_BTHD, ("batch", "length", "act_heads", None))
    out_std = std / (2 * cfg.n_layers) ** 0.5
    return _dense(cfg.d_model, ("heads", "head_dim", "embed"), "out", cfg, out_std,
                  cfg.use_bias)(out_BTHD), cache


class Mlp(nn.Module):
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    std, out_std = cfg.init_std, cfg.init_std / (2 * cfg.n_layers) ** 0.5
    if cfg.mlp == "swiglu":
      gate_BTF = _dense(cfg.d_ff, ("embed", "mlp"), "gate", cfg, std, cfg.use_bias)(x_BTD)
      up_BTF = _dense(cfg.d_ff, ("embed", "mlp"), "up", cfg, std, cfg.use_bias)(x_BTD)
      h_BTF = nn.silu(gate_BTF) * up_BTF
    else:
      h_BTF = nn.gelu(_dense(cfg.d_ff, ("embed", "mlp"), "up", cfg, std, cfg.use_bias)(x_BTD),
                      approximate=True)
    h_BTF = nn.with_logical_constraint(h_BTF, ("batch", "length", "act_mlp"))
    return _dense(cfg.d_model, ("mlp", "embed"), "down", cfg, out_std, cfg.use_bias)(h_BTF)


class Block(nn.Module):
  """Pre-norm residual block; (carry, cache) signature so it can be scanned (cache None in training)."""
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x_BTD, positions_BT, mask_B1TT, cache=None, cache_index=None, prev_ok_BX=None):
    attn_BTD, cache = Attention(self.cfg, name="attn")(Norm(self.cfg, name="ln_attn")(x_BTD),
                                                       positions_BT, mask_B1TT, cache, cache_index, prev_ok_BX)
    x_BTD = x_BTD + attn_BTD
    x_BTD = x_BTD + Mlp(self.cfg, name="mlp")(Norm(self.cfg, name="ln_mlp")(x_BTD))
    x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "act_embed"))
    return x_BTD, cache


class Transformer(nn.Module):
  """tokens_BT → logits_BTV (float32), or scores_BT with `head='score'`. Use `hidden=True` for
  the final normed states.

  With `cache` (from `kv_cache.init`) returns (logits_BTV, cache): the T new
  tokens occupy slots cache_index.., row b's real tokens start at slot
  cache_start_B[b] (left padding), and positions default to slot − start.
  """
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, hidden=False,
               cache=None, cache_index=None, cache_start_B=None):
    cfg = self.cfg
    B, T = tokens_BT.shape
    if cache is not None:
      if cache_start_B is None:
        cache_start_B = jnp.zeros((B,), jnp.int32)
      if positions_BT is None:
        positions_BT = kv_cache.positions(cache_start_B, cache_index, T)
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=DTYPES[cfg.dtype], param_dtype=jnp.float32,
                     embedding_init=nn.with_logical_partitioning(_init(cfg.init_std), ("vocab", "embed")),
                     name="embed")
    x_BTD = embed(tokens_BT)
    if cfg.positions == "learned":
      pos = nn.Embed(cfg.max_len, cfg.d_model, dtype=DTYPES[cfg.dtype], param_dtype=jnp.float32,
                     embedding_init=nn.with_logical_partitioning(_init(cfg.init_std / 2), (None, "embed")),
                     name="pos_embed")
      x_BTD = x_BTD + pos(positions_BT)
    x_BTD = nn.with_logical_constraint(x_BTD, ("batch", "length", "act_embed"))
    # A zero-cost hook: gradients w.r.t. the embedded inputs (causality tests, saliency).
    x_BTD = self.perturb("embedded", x_BTD)
    mask_B1TT = attention_mask(segment_ids_BT, T)
    prev_ok_BX = None  # smear_keys: which positions (or cache slots) have a previous token of their own
    if cache is not None:
      S = jax.tree.leaves(cache)[0].shape[-2]
      mask_B1TT = kv_cache.mask(cache_start_B, cache_index, T, S)
      if cfg.smear_keys:
        prev_ok_BX = kv_cache.has_previous(cache_start_B, S)
    elif cfg.smear_keys:
      prev_ok_BX = previous_ok(mask_B1TT, T, B)

    block = Block
    policy = REMAT_POLICIES[cfg.remat]
    if cfg.remat != "none":
      block = nn.remat(block, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast), length=cfg.n_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x_BTD, new_layers = stack(cfg, name="layers")(
          x_BTD, positions_BT, mask_B1TT, None if cache is None else cache["layers"], cache_index, prev_ok_BX)
      new_cache = {"layers": new_layers}
    else:
      new_cache = {}
      for i in range(cfg.n_layers):
        x_BTD, new_cache[f"layer_{i}"] = block(cfg, name=f"layer_{i}")(
            x_BTD, positions_BT, mask_B1TT, None if cache is None else cache[f"layer_{i}"], cache_index,
            prev_ok_BX)

    x_BTD = Norm(cfg, name="ln_final")(x_BTD)
    if hidden:
      return x_BTD if cache is None else (x_BTD, new_cache)
    if cfg.head == "score":
      scores_BT = _dense(1, ("embed", None), "score", cfg, cfg.init_std, False)(x_BTD)[..., 0]
      scores_BT = nn.with_logical_constraint(scores_BT, ("batch", "length")).astype(jnp.float32)
      return scores_BT if cache is None else (scores_BT, new_cache)
    if cfg.tie_embeddings:
      dtype = DTYPES[cfg.dtype]
      logits_BTV = ops.matmul(x_BTD.astype(dtype), embed.embedding.astype(dtype).T, 1, cfg.weight_grad)
    else:
      logits_BTV = _dense(cfg.vocab_size, ("embed", "vocab"), "lm_head", cfg, cfg.init_std,
                          False)(x_BTD)
    logits_BTV = nn.with_logical_constraint(logits_BTV, ("batch", "length", "act_vocab"))
    if cache is not None:
      return logits_BTV.astype(jnp.float32), new_cache
    return logits_BTV.astype(jnp.float32)


# The keys that define the parameters' shapes and meaning (a stage started from another inherits
# them: lm/init_from.py). scan_layers only changes the layout; max_len is a parameter shape only
# with learned positions.
# `head` is not among them: a stage chooses its own head (a reward model starts from an LM).
ARCHITECTURE_KEYS = ("vocab_size", "max_len", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "d_ff", "positions", "rope_theta", "norm", "norm_eps", "mlp", "tie_embeddings",
                     "use_bias", "qkv_bias", "qk_norm", "smear_keys", "rope_scaling", "rope_factor",
                     "rope_original_max_len", "rope_low_freq_factor", "rope_high_freq_factor",
                     "rope_beta_fast", "rope_beta_slow", "rope_attention_factor")


def default_config() -> ml_collections.ConfigDict:
  """Every `config.model` key with its default (GPT-2 style, small); configs/base.py sizes it."""
  m = ml_collections.ConfigDict()
  m.vocab_size = 0          # 0: taken from the tokenizer; else must be ≥ its vocabulary
  m.max_len = 256           # longest sequence (learned position table size)
  m.d_model = 256           # residual width D
  m.n_layers = 4            # transformer blocks L
  m.n_heads = 4             # query heads H
  m.n_kv_heads = 4          # key/value heads K (< H: grouped-query attention)
  m.head_dim = 0            # per-head width; 0 means d_model // n_heads
  m.d_ff = 1024             # MLP hidden width F
  m.positions = "learned"   # learned | rotary
  m.rope_theta = 10000.0    # rotary base frequency
  m.rope_scaling = "none"   # none | linear | llama3 | yarn: long-context frequency rescaling (lm/rope.py)
  m.rope_factor = 1.0       # context extension factor (linear, llama3, yarn)
  m.rope_original_max_len = 0       # llama3, yarn: context length before extension (required by both)
  m.rope_low_freq_factor = 1.0      # llama3: wavelengths above original/this are divided by rope_factor
  m.rope_high_freq_factor = 4.0     # llama3: wavelengths below original/this are kept
  m.rope_beta_fast = 32.0   # yarn: rotations within the original context above which a pair is kept
  m.rope_beta_slow = 1.0    # yarn: rotations below which a pair is fully interpolated
  m.rope_attention_factor = 0.0     # yarn: cos/sin scale (0: 0.1·ln(rope_factor) + 1)
  m.norm = "layernorm"      # layernorm | rmsnorm
  m.norm_eps = 1e-5         # epsilon inside the norm
  m.mlp = "gelu"            # gelu (tanh approx.) | swiglu
  m.tie_embeddings = True   # LM head shares the token embedding
  m.use_bias = True         # biases on every linear layer (GPT-2)
  m.qkv_bias = False        # biases on q/k/v only (Qwen2)
  m.qk_norm = False         # norm over each head's query and key before rotary (Qwen3)
  m.smear_keys = False      # each key mixes in the previous token's (learned share per kv head): induction heads form early
  m.init_std = 0.02         # normal init std; residual outputs scaled by 1/sqrt(2L)
  m.dtype = "float32"       # compute dtype: float32 | bfloat16 (parameters stay float32)
  m.remat = "none"          # none | full | dots | dots_no_batch (jax.checkpoint policy)
  m.scan_layers = False     # lax.scan over blocks: O(1) compile time in depth
  m.attention = "xla"       # xla | cudnn | auto (jax.nn.dot_product_attention) | einsum | cpu_kernel (CPU only: lm/cpu/)
  m.weight_grad = "xla"     # xla (autodiff) | copy_transpose (CPU only: lm/cpu/matmul.py)
  m.head = "lm"             # lm: next-token logits | score: one scalar per position, no vocabulary matrix (reward model)
  return m


def build(cfg: ml_collections.ConfigDict) -> Transformer:
  """The model for `config.model`, frozen so the module is hashable (jit static arg)."""
  validate(cfg)
  return Transformer(ml_collections.FrozenConfigDict(cfg))


def validate(cfg: ml_collections.ConfigDict) -> None:
  """One-line errors naming the `model.*` key, before anything compiles."""
  def bad(key, msg):
    raise UserError(f"config.model.{key}: {msg}")
  for key, options in (("positions", ("learned", "rotary")), ("norm", ("layernorm", "rmsnorm")),
                       ("mlp", ("gelu", "swiglu")), ("dtype", tuple(DTYPES)),
                       ("remat", tuple(REMAT_POLICIES)), ("attention", ops.ATTENTION_NAMES),
                       ("weight_grad", ops.MATMUL_NAMES), ("head", HEADS)):
    if cfg[key] not in options:
      bad(key, f"{cfg[key]!r} is not one of {options}")
  if cfg.n_heads % cfg.n_kv_heads:
    bad("n_kv_heads", f"{cfg.n_kv_heads} must divide n_heads={cfg.n_heads}")
  if cfg.head_dim == 0 and cfg.d_model % cfg.n_heads:
    bad("n_heads", f"{cfg.n_heads} must divide d_model={cfg.d_model} (or set model.head_dim)")
  if cfg.positions == "rotary" and head_dim(cfg) % 2:
    bad("head_dim", f"rotary embeddings need an even head_dim, got {head_dim(cfg)}")
  if cfg.rope_scaling not in rope.SCALINGS:
    bad("rope_scaling", f"{cfg.rope_scaling!r} is not one of {rope.SCALINGS}")
  if cfg.rope_scaling != "none" and cfg.positions != "rotary":
    bad("rope_scaling", f"{cfg.rope_scaling!r} rescales rotary frequencies; positions is {cfg.positions!r}")
  if cfg.rope_scaling != "none" and cfg.rope_factor <= 0:
    bad("rope_factor", f"must be positive, got {cfg.rope_factor}")
  if cfg.rope_scaling in ("llama3", "yarn") and cfg.rope_original_max_len <= 0:
    bad("rope_original_max_len", f"{cfg.rope_scaling} scaling needs the pre-extension context length (> 0)")
  if cfg.rope_scaling == "llama3" and cfg.rope_high_freq_factor <= cfg.rope_low_freq_factor:
    bad("rope_high_freq_factor", f"{cfg.rope_high_freq_factor} must exceed rope_low_freq_factor "
                                 f"{cfg.rope_low_freq_factor}")


def num_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def flops_per_token(cfg: ml_collections.ConfigDict, seq_len: int) -> float:
  """Training FLOPs per token: 6·N (matmul weights, incl. the head) + 12·L·D·T attention.

  N counts every weight that takes part in a matmul: the LM head (the embedding
  table when tied) or the score head, not the input embedding (a gather) nor the
  learned positions — the PaLM / nanoGPT estimate, so figures compare with those projects.
  """
  D, F, L, V = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
  H, K, Dh = cfg.n_heads, cfg.n_kv_heads, head_dim(cfg)
  attn = D * (H + 2 * K) * Dh + H * Dh * D
  mlp = (3 if cfg.mlp == "swiglu" else 2) * D * F
  n_matmul = L * (attn + mlp) + (D if cfg.head == "score" else V * D)
  return 6 * n_matmul + 12 * L * H * Dh * seq_len

