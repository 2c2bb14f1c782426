"""Pieces every experiment config shares: model sizes, mesh, sharding rules, optimizer.

Each experiment family's config file (pretrain.py, ...) imports these and adds
its own keys. Every key the code reads is declared here or there.
"""
from __future__ import annotations

import ml_collections

from lm import model as model_lib
from lm.errors import UserError

# Logical axis → mesh axes. A mesh axis is used at most once per array, so an
# activation's 'act_embed' stays unsharded when 'batch' already took fsdp.
SHARDING_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def model_config(size: str) -> ml_collections.ConfigDict:
  """Model presets: 'tiny' (CPU), 'bench' (peer shapes), 'gpt2_124m', 'llama_1b', 'llama_tiny'."""
  gpt2 = dict(positions="learned", norm="layernorm", mlp="gelu", tie_embeddings=True,
              use_bias=True, qkv_bias=False, norm_eps=1e-5)
  llama = dict(positions="rotary", norm="rmsnorm", mlp="swiglu", tie_embeddings=False,
               use_bias=False, qkv_bias=False, norm_eps=1e-5)
  sizes = {
      "tiny": dict(gpt2, vocab_size=0, max_len=256, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=512),
      "llama_tiny": dict(llama, vocab_size=0, max_len=256, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384),
      "bench": dict(gpt2, vocab_size=4096, max_len=256, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=1024),
      "gpt2_124m": dict(gpt2, vocab_size=50304, max_len=1024, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=3072),
      "llama_1b": dict(llama, vocab_size=128256, max_len=2048, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
                       rope_theta=500000.0, tie_embeddings=True),  # Llama-3.2-1B shapes
  }
  if size not in sizes:
    raise UserError(f"model size {size!r} is not one of {sorted(sizes)}")
  m = model_lib.default_config()  # every model key, declared with its comment in lm/model.py
  m.update(sizes[size])
  return m


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  mesh = ml_collections.ConfigDict()
  mesh.data = data          # pure data-parallel axis (-1: all devices left)
  mesh.fsdp = fsdp          # parameter/optimizer-sharded data-parallel axis
  mesh.tensor = tensor      # tensor-parallel axis (heads, MLP width, vocabulary)
  return mesh


def optimizer_config(lr: float = 3e-4) -> ml_collections.ConfigDict:
  opt = ml_collections.ConfigDict()
  opt.name = "adamw"        # adamw | sgd
  opt.lr = lr               # peak learning rate
  opt.min_lr_ratio = 0.1    # final lr as a fraction of the peak (cosine / wsd)
  opt.schedule = "cosine"   # cosine | wsd (warmup-stable-decay) | constant
  opt.warmup_steps = 100    # linear warmup from 0
  opt.decay_fraction = 0.2  # wsd: fraction of post-warmup steps spent decaying
  opt.b1 = 0.9              # Adam beta1 (SGD momentum)
  opt.b2 = 0.95             # Adam beta2
  opt.eps = 1e-8            # Adam epsilon
  opt.weight_decay = 0.1    # decoupled, on matrices only
  opt.clip_norm = 1.0       # global-norm gradient clipping (0: off)
  return opt


def init_from_config() -> ml_collections.ConfigDict:
  """Where a post-training stage starts: an earlier stage's workdir or a Hugging Face folder (lm/init_from.py)."""
  i = ml_collections.ConfigDict()
  i.workdir = ""            # an earlier stage's workdir (its checkpoints/)
  i.step = -1               # its checkpoint step (-1: the newest)
  i.hf_dir = ""             # or a Hugging Face folder (config.json + safetensors)
  return i


def task_options() -> ml_collections.ConfigDict:
  """Options of the synthetic tasks (lm/tasks/), one block per task, shared by SFT, GRPO and evaluation."""
  t = ml_collections.ConfigDict()
  t.arithmetic = ml_collections.ConfigDict()
  t.arithmetic.ops = "add,mul"          # operations drawn uniformly (add, mul)
  t.arithmetic.add_digits = (2, 4)      # digits of each addend (inclusive range)
  t.arithmetic.mul_digits = (2, 3)      # digits of the multiplicand
  t.arithmetic.mul_by_digits = (1, 2)   # digits of the multiplier
  t.arithmetic.worked = True            # targets show the steps (False: "Answer: <n>" only)
  t.arithmetic.compact = False          # worked steps in their short form ("8+7=15" per column: ~1/3 of the tokens)
  t.spelling = ml_collections.ConfigDict()
  t.spelling.kinds = "count,spell"      # question kinds (count: letters in a word, spell: letter by letter)
  t.spelling.made_up_words = 0          # made-up words added to the training split: copying, not memorising
  t.world = ml_collections.ConfigDict()
  t.world.train_fold = ""               # "a" / "b": SFT on one half of the train entities (the refusal recipe's
                                        # cross-fitted probes, configs/refusal.py refusal.fold_probes)
  t.world.min_train_exposure = 1        # train on facts the text states at least this often (0: every fact,
                                        # never-stated ones included, as the refusal recipe probes them)
  return t


# The CPU presets' attention: one fused C++ kernel per layer (lm/cpu/attention.py), the fastest on
# CPU (an SFT step of 16 packed rows 0.71 s against 0.87 s with XLA's masked attention, the same
# loss, 2026-12-03); elsewhere it falls back to einsum with one warning.
CPU_ATTENTION = "cpu_kernel"


def inherited_model_config(attention: str | None = None) -> ml_collections.ConfigDict:
  """`config.model` for a stage that starts from `init_from`: architecture keys are None
  (taken from the source; a value here must agree with it), run-time keys are set
  (`attention`, a run-time choice, is not inherited: None keeps the model's default)."""
  m = model_lib.default_config()
  for key in model_lib.ARCHITECTURE_KEYS:  # None until set, still overridable with its type
    m[key] = ml_collections.config_dict.placeholder(type(m[key]))
  if attention is not None:
    m.attention = attention
  return m
