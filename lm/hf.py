"""Hugging Face checkpoints in and out, safetensors only: GPT-2, Llama (2, 3.x with llama3
rotary scaling; SmolLM2 is Llama with tied embeddings), Qwen2/Qwen2.5 and Qwen3.

  cfg, params = hf.import_checkpoint("path/to/hf_folder")        # config.json + *.safetensors
  hf.export_checkpoint(params, cfg, "path/to/out", tok)           # transformers.from_pretrained loads it
  cfg, params = hf.from_state_dict(tensors, hf_config_dict)       # in-memory weights (tests, torch)

A reward model (`model.head='score'`) goes to and from the family's
`*ForSequenceClassification` (one label, `score.weight`); a causal LM read into a
score model leaves the head to the caller (lm/reward_model.py initialises it).

config.json ⇄ `config.model` (which families, what is refused) is `lm/hf_config.py`;
the tokenizer and chat template of a folder are `lm.tokenizer.HFTokenizer` and
`lm/chat_template.py`, and `export_checkpoint` writes them back when given the tokenizer.

Our layout keeps heads as separate axes (query kernel (D, H, Dh), output
(H, Dh, D)); Hugging Face stores torch `Linear` weights as (out, in), and GPT-2
its `Conv1D` weights as (in, out) with q, k, v fused in one `c_attn`. Every
parameter of ours is described by a `_Source`: which tensor, whether it is
transposed, which column range of a fused tensor, and the reshape is implied by
the shapes. That description also says which *slice* of the file a shard of
ours needs, so with a mesh each host reads only the bytes of its own shards
(`jax.make_array_from_callback` asks only for addressable shards, and
safetensors files are read lazily, slice by slice).

Both rotary conventions agree: Llama/Qwen checkpoints rotate half-split
pairs, as `lm.rope.apply` does, so no permutation of q/k is needed. Qwen3's
per-head q_norm/k_norm weights are our `attn/q_norm`, `attn/k_norm` scales.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lm.errors import MissingFile, UserError
from lm import model as model_lib
# The config side lives in lm/hf_config.py; its names stay importable from here.
from lm.hf_config import ARCHITECTURES as _ARCHITECTURES  # noqa: F401
from lm.hf_config import FAMILIES, config_from_hf, config_to_hf, family_of  # noqa: F401


# ---------------------------------------------------------------- the name map

@dataclasses.dataclass(frozen=True)
class _Source:
  """Our parameter = reshape(view), view = tensor (or tensor.T) [..., cols[0]:cols[1]]."""
  name: str
  transpose: bool = False
  cols: tuple[int, int] | None = None
  zeros: bool = False  # no tensor in the checkpoint: an exact zero (Llama attention-only biases)


def _sources(cfg: ml_collections.ConfigDict, family: str, prefix: str) -> dict[tuple, _Source]:
  """Our (unstacked) parameter path → where it lives; layer paths start with 'layer_{i}'."""
  out, L = {}, cfg.n_layers
  if family == "gpt2":
    D = cfg.d_model
    out[("embed", "embedding")] = _Source(prefix + "wte.weight")
    out[("pos_embed", "embedding")] = _Source(prefix + "wpe.weight")
    out[("ln_final", "scale")] = _Source(prefix + "ln_f.weight")
    out[("ln_final", "bias")] = _Source(prefix + "ln_f.bias")
    for i in range(L):
      h, ly = f"{prefix}h.{i}.", f"layer_{i}"
      for ours, theirs in (("ln_attn", "ln_1"), ("ln_mlp", "ln_2")):
        out[(ly, ours, "scale")] = _Source(h + theirs + ".weight")
        out[(ly, ours, "bias")] = _Source(h + theirs + ".bias")
      for j, qkv in enumerate(("query", "key", "value")):
        for leaf in ("kernel", "bias"):
          suffix = "weight" if leaf == "kernel" else "bias"
          out[(ly, "attn", qkv, leaf)] = _Source(h + "attn.c_attn." + suffix, cols=(j * D, (j + 1) * D))
      for ours, theirs in (("attn/out", "attn.c_proj"), ("mlp/up", "mlp.c_fc"), ("mlp/down", "mlp.c_proj")):
        out[(ly, *ours.split("/"), "kernel")] = _Source(h + theirs + ".weight")
        out[(ly, *ours.split("/"), "bias")] = _Source(h + theirs + ".bias")
  else:
    out[("embed", "embedding")] = _Source(prefix + "embed_tokens.weight")
    out[("ln_final", "scale")] = _Source(prefix + "norm.weight")
    qkv_bias = cfg.use_bias or cfg.qkv_bias
    for i in range(L):
      h, ly = f"{prefix}layers.{i}.", f"layer_{i}"
      out[(ly, "ln_attn", "scale")] = _Source(h + "input_layernorm.weight")
      out[(ly, "ln_mlp", "scale")] = _Source(h + "post_attention_layernorm.weight")
      if cfg.qk_norm:
        out[(ly, "attn", "q_norm", "scale")] = _Source(h + "self_attn.q_norm.weight")
        out[(ly, "attn", "k_norm", "scale")] = _Source(h + "self_attn.k_norm.weight")
      for ours, theirs, has_bias in (("attn/query", "self_attn.q_proj", qkv_bias),
                                     ("attn/key", "self_attn.k_proj", qkv_bias),
                                     ("attn/value", "self_attn.v_proj", qkv_bias),
                                     ("attn/out", "self_attn.o_proj", cfg.use_bias),
                                     ("mlp/gate", "mlp.gate_proj", cfg.use_bias),
                                     ("mlp/up", "mlp.up_proj", cfg.use_bias),
                                     ("mlp/down", "mlp.down_proj", cfg.use_bias)):
        out[(ly, *ours.split("/"), "kernel")] = _Source(h + theirs + ".weight", transpose=True)
        if has_bias:
          out[(ly, *ours.split("/"), "bias")] = _Source(h + theirs + ".bias")
  if cfg.head == "score":
    out[("score", "kernel")] = _Source("score.weight", transpose=True)  # (1, D), no bias
  elif not cfg.tie_embeddings:
    out[("lm_head", "kernel")] = _Source("lm_head.weight", transpose=True)
  return out


def _groups(ours: tuple[int, ...], view: tuple[int, ...]) -> list[list[int]]:
  """Which consecutive axes of ours merge into each axis of the (row-major) view."""
  groups, axis = [], 0
  for size in view:
    group, prod = [], 1
    while axis < len(ours) and (prod < size or not group):
      group.append(axis)
      prod *= ours[axis]
      axis += 1
    if prod != size:
      raise UserError(f"cannot reshape {view} into {ours}")
    groups.append(group)
  if axis != len(ours):
    raise UserError(f"cannot reshape {view} into {ours}")
  return groups


# ---------------------------------------------------------------- readers

class _Reader:
  """Lazy, sliced reads from a folder of safetensors files (single or index.json-sharded)."""

  def __init__(self, folder: str):
    from safetensors import safe_open
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    elif os.path.exists(single):
      weight_map = None
    else:
      raise MissingFile(f"{folder}: no model.safetensors or model.safetensors.index.json "
                              "(only safetensors checkpoints are read, never pickles)")
    self._files = {}
    files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
    for fname in files:
      self._files[fname] = safe_open(os.path.join(folder, fname), framework="numpy")
    self._where = weight_map or {k: "model.safetensors" for k in self._files["model.safetensors"].keys()}

  def names(self):
    return self._where.keys()

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._files[self._where[name]].get_slice(name).get_shape())

  def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
    return np.asarray(self._files[self._where[name]].get_slice(name)[index], np.float32)


class _DictReader:
  """The same surface over in-memory arrays (e.g. a torch state dict turned to numpy)."""

  def __init__(self, tensors: dict[str, Any]):
    self._t = tensors

  def names(self):
    return self._t.keys()

  def shape(self, name):
    return tuple(self._t[name].shape)

  def read(self, name, index):
    return np.asarray(self._t[name][index], np.float32)


def _read(reader, src: _Source, shape: tuple[int, ...], index: tuple[slice, ...]) -> np.ndarray:
  """The block `index` of our parameter (of `shape`), reading only the rows/columns it needs."""
  if src.zeros:
    return np.zeros([s.stop - s.start for s in index], np.float32)
  full = reader.shape(src.name)
  view = full[::-1] if src.transpose else full
  if src.cols:
    view = (*view[:-1], src.cols[1] - src.cols[0])
  view_index, block_shape, inner = [], [], []
  for group in _groups(shape, view):
    first, rest = index[group[0]], group[1:]
    stride = math.prod(shape[a] for a in rest)
    view_index.append(slice(first.start * stride, first.stop * stride))
    block_shape += [first.stop - first.start] + [shape[a] for a in rest]
    inner += [slice(None)] + [index[a] for a in rest]
  if src.cols:
    last = view_index[-1]
    view_index[-1] = slice(last.start + src.cols[0], last.stop + src.cols[0])
  file_index = tuple(view_index[::-1]) if src.transpose else tuple(view_index)
  block = reader.read(src.name, file_index)
  if src.transpose:
    block = block.T
  return block.reshape(block_shape)[tuple(inner)]


def _normalize(index: tuple, shape: tuple[int, ...]) -> tuple[slice, ...]:
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  return tuple(slice(*s.indices(n)[:2]) for s, n in zip(index, shape))


def _leaf_reader(reader, sources, path: tuple[str, ...], shape, scanned: bool) -> Callable:
  """index → block of one of our (possibly layer-stacked) parameters."""
  @functools.lru_cache(maxsize=None)
  def read(bounds):
    index = tuple(slice(a, b) for a, b in bounds)
    if not scanned:
      return _read(reader, sources[path], shape, index)
    layers, rest = index[0], index[1:]
    return np.stack([_read(reader, sources[(f"layer_{i}", *path[1:])], shape[1:], rest)
                     for i in range(layers.start, layers.stop)])

  def callback(index):
    # Replicated shards ask for the same block once per device: read it once.
    return read(tuple((s.start, s.stop) for s in _normalize(index, shape)))
  return callback


# ---------------------------------------------------------------- import

def _prefix(reader, family: str) -> str:
  """GPT-2 files exist with and without the 'transformer.' prefix; Llama-likes use 'model.'."""
  stem = "wte.weight" if family == "gpt2" else "embed_tokens.weight"
  for p in ("transformer.", "model.", ""):
    if p + stem in reader.names():
      return p
  raise UserError(f"checkpoint has no {stem!r} tensor: not a {family} checkpoint")


def _abstract(cfg: ml_collections.ConfigDict):
  model = model_lib.build(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 1), np.int32))["params"])
  return nn.meta.unbox(boxed), nn.get_partition_spec(boxed)


def load_params(reader, cfg: ml_collections.ConfigDict, family: str, mesh=None, rule_pairs=None,
                shardings=None):
  """Our parameter pytree (float32), sharded over `mesh` by `rule_pairs`, or by `shardings`
  (a tree like the parameters), when given.

  A score-head config (`model.head='score'`) read from a causal-LM checkpoint, which has no
  `score.weight`, gets every parameter but "score" (and its LM head is not read): the caller
  adds a fresh head (lm/reward_model.py)."""
  sources = _sources(cfg, family, _prefix(reader, family))
  headless = cfg.head == "score" and sources[("score", "kernel")].name not in reader.names()
  if headless:
    del sources[("score", "kernel")]
  if family == "llama":
    # attention_bias xor mlp_bias: our use_bias covers both, the absent ones are exact zeros.
    sources = {p: _Source("", zeros=True) if p[-1] == "bias" and s.name not in reader.names() else s
               for p, s in sources.items()}
  missing = [s.name for s in sources.values() if not s.zeros and s.name not in reader.names()]
  if missing:
    raise UserError(f"checkpoint lacks {len(missing)} tensors the config needs, e.g. {missing[:3]}")
  params_abs, specs = _abstract(cfg)
  if headless:
    params_abs, specs = ({k: v for k, v in t.items() if k != "score"} for t in (params_abs, specs))
  if shardings is None and mesh is not None:
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rule_pairs)

  def make(keypath, leaf_abs):
    path = tuple(k.key for k in keypath)
    cb = _leaf_reader(reader, sources, path, leaf_abs.shape, scanned=path[0] == "layers")
    if shardings is None:
      return jax.numpy.asarray(cb(()))
    sh = functools.reduce(lambda t, k: t[k], path, shardings)
    return jax.make_array_from_callback(leaf_abs.shape, sh, cb)
  return jax.tree_util.tree_map_with_path(make, params_abs)


def read_hf_config(folder: str) -> dict:
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise MissingFile(f"{path} not found: expected a Hugging Face model folder")
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                    f"a Hugging Face config.json is one JSON object") from None
  if not isinstance(hf, dict):
    raise UserError(f"{path}: a JSON {type(hf).__name__}, expected an object (a Hugging Face config.json)")
  return hf


def import_checkpoint(folder: str, *, scan_layers: bool = False, mesh=None, rule_pairs=None,
                      shardings=None, head: str | None = None):
  """(our model config, params) from a local Hugging Face folder (config.json + safetensors).

  `head` (None: the folder's — 'score' for a *ForSequenceClassification folder) may turn a
  causal LM into a score model: its trunk is read, its LM head is not, and "score" is absent."""
  hf = read_hf_config(folder)
  cfg = config_from_hf(hf, scan_layers)
  if head is not None:
    cfg.head = head
    model_lib.validate(cfg)
  return cfg, load_params(_Reader(folder), cfg, hf["model_type"], mesh, rule_pairs, shardings)


def from_state_dict(tensors: dict[str, Any], hf_config: dict, *, scan_layers: bool = False):
  """(our model config, params) from in-memory Hugging Face weights (numpy-convertible values)."""
  cfg = config_from_hf(hf_config, scan_layers)
  return cfg, load_params(_DictReader(tensors), cfg, hf_config["model_type"])


# ---------------------------------------------------------------- export

def to_state_dict(params: Any, cfg: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Our params → Hugging Face tensor names and layouts (float32 numpy, host memory)."""
  family = family_of(cfg)
  prefix = "transformer." if family == "gpt2" else "model."
  sources = _sources(cfg, family, prefix)
  def host(v):
    if isinstance(v, jax.Array) and not v.is_fully_addressable:
      from jax.experimental import multihost_utils
      v = multihost_utils.process_allgather(v, tiled=True)
    return np.asarray(jax.device_get(v), np.float32)
  flat = {tuple(k.key for k in kp): host(v) for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  if cfg.scan_layers:
    for path in [p for p in flat if p[0] == "layers"]:
      stacked = flat.pop(path)
      for i in range(cfg.n_layers):
        flat[(f"layer_{i}", *path[1:])] = stacked[i]
  out: dict[str, np.ndarray] = {}
  for path, src in sources.items():
    value = flat[path]
    if value.ndim == 1 or path[-1] == "bias":
      view = value.reshape(-1)
    elif path[-2] == "out":                     # (H, Dh, D) → (H·Dh, D)
      view = value.reshape(-1, value.shape[-1])
    else:                                       # (D, H, Dh) → (D, H·Dh); 2-D kernels unchanged
      view = value.reshape(value.shape[0], -1)
    view = view.T if src.transpose else view
    if src.cols:
      fused = out.setdefault(src.name, np.zeros(
          (*view.shape[:-1], 3 * view.shape[-1]), np.float32))
      fused[..., src.cols[0]:src.cols[1]] = view
    else:
      out[src.name] = np.ascontiguousarray(view)
  return out


def export_checkpoint(params: Any, cfg: ml_collections.ConfigDict, folder: str, tokenizer=None, *,
                      pad_token_id: int | None = None) -> None:
  """Write config.json + model.safetensors that `AutoModelForCausalLM.from_pretrained` loads
  (`AutoModelForSequenceClassification` for a score-head model).

  With a Hugging Face tokenizer (`lm.tokenizer.HFTokenizer`, e.g. an imported model's, kept
  through SFT), also its tokenizer.json + tokenizer_config.json (special tokens, chat template),
  and config.json names its bos/eos/pad ids. A score-head model needs `pad_token_id` (or such a
  tokenizer): transformers scores each row at its last token that is not the pad id, so that
  id must never end a scored sequence.
  """
  from safetensors.numpy import save_file
  tensors = to_state_dict(params, cfg)
  hf = config_to_hf(cfg)
  if tokenizer is not None:
    if not hasattr(tokenizer, "save_pretrained"):
      raise UserError(f"export: a {getattr(tokenizer, 'kind', type(tokenizer).__name__)} tokenizer has no "
                      f"Hugging Face form; export without it or train from an HF folder's tokenizer")
    hf.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
  if pad_token_id is not None:
    hf["pad_token_id"] = int(pad_token_id)
  if cfg.head == "score" and hf.get("pad_token_id") is None:
    raise UserError("export: a reward model (model.head='score') needs pad_token_id (the tokenizer's "
                    "pad id): transformers reads each row's score at its last non-pad token")
  if jax.process_index() != 0:
    return
  os.makedirs(folder, exist_ok=True)
  save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  if tokenizer is not None:
    tokenizer.save_pretrained(folder)
