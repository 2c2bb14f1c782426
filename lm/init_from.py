"""Stage-to-stage loading: start a stage from an earlier stage's workdir or a Hugging Face folder.

Every post-training config declares an `init_from` block:

    init_from.workdir = "runs/sft"   # an earlier stage's workdir: its newest checkpoint, or
    init_from.step = -1              #   a given step (-1: newest)
    init_from.hf_dir = ""            # or a Hugging Face folder (config.json + safetensors)

Only parameters are restored — no optimizer moments, no data iterator — straight
into their shards on the current mesh (Orbax partial restore; `lm.hf` reads only
each host's slices). The source's model config and tokenizer come with it. The
stage's own `model` block keeps the run-time keys (dtype, remat, attention, ...);
its architecture keys are `None` ("from the source"), and one set to a value the
source contradicts (a different width or vocabulary) is a one-line error.

`load_model` is the same for tools that only run a model (sampling, chat, eval).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lm import checkpoint as ckpt_lib
from lm import hf, train
from lm import model as model_lib
from lm import tokenizer as tokenizer_lib
from lm.errors import MissingFile, UserError

ARCHITECTURE_KEYS = model_lib.ARCHITECTURE_KEYS
# Model keys that older checkpoints may lack, with the value they implicitly had.
BACKFILL = {"head_dim": 0, "qkv_bias": False, "attention": "xla", "weight_grad": "xla",
            "scan_layers": False, "remat": "none", "qk_norm": False, "smear_keys": False, "head": "lm",
            **{k: v for k, v in model_lib.default_config().items() if k.startswith("rope_") and k != "rope_theta"}}


@dataclasses.dataclass
class Source:
  kind: str                          # workdir | hf
  path: str                          # checkpoints folder or HF folder
  step: int | None                   # checkpoint step (workdir)
  model_cfg: ml_collections.ConfigDict
  tokenizer: Any                     # None when an HF folder has no tokenizer.json


def _open_manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory, item_names=("state", "data", "config", "tokenizer"),
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def _name(key, field: str) -> str:
  """How an error names a field: config.init_from.workdir, --workdir on a tool's command line ("cli"),
  or whatever a {field: name} mapping says (a block whose fields are called otherwise)."""
  if isinstance(key, dict):
    return key[field]
  return f"--{field}" if key == "cli" else f"{key}.{field}"


def resolve(init_cfg, key: str = "config.init_from") -> Source:
  """Finds the source and reads its model config and tokenizer (nothing is written).

  `key` names the fields in errors: a config block's path, or "cli" for --workdir/--hf_dir/--step.
  """
  if bool(init_cfg.workdir) == bool(init_cfg.hf_dir):
    raise UserError(f"{key if isinstance(key, str) else _name(key, 'workdir')}: set exactly one of workdir (an earlier stage's run) or hf_dir "
                    f"(a Hugging Face folder)")
  if init_cfg.hf_dir:
    folder = init_cfg.hf_dir
    if not os.path.isdir(folder):
      raise MissingFile(f"{_name(key, 'hf_dir')}: no such folder {folder!r}")
    if not os.path.isfile(os.path.join(folder, "config.json")):
      raise MissingFile(f"{_name(key, 'hf_dir')}: no config.json in {folder!r} (a Hugging Face model "
                        f"folder has config.json and model*.safetensors)")
    model_cfg = hf.config_from_hf(hf.read_hf_config(folder))
    tok = (tokenizer_lib.HFTokenizer(folder)
           if os.path.exists(os.path.join(folder, "tokenizer.json")) else None)
    return Source("hf", folder, None, model_cfg, tok)
  directory = os.path.abspath(os.path.join(init_cfg.workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise MissingFile(f"{_name(key, 'workdir')}: no checkpoints in {directory} (run the earlier stage first)")
  source = _workdir_source(directory, init_cfg.step)
  if source is None:
    raise MissingFile(f"{_name(key, 'step')}: no finished checkpoint {init_cfg.step} in {directory} "
                      f"(have {_steps(directory)})")
  return source


def _steps(directory: str) -> list[int]:
  manager = _open_manager(directory)
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


def _workdir_source(directory: str, step: int) -> Source | None:
  """The checkpoint `step` (< 0: the newest) of a checkpoints folder, or None when it has no such step."""
  manager = _open_manager(directory)
  steps = sorted(manager.all_steps())
  step = steps[-1] if steps and step < 0 else step
  if step not in steps:
    manager.close()
    return None
  meta = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore(),
                                                       tokenizer=ocp.args.JsonRestore()))
  manager.close()
  model_cfg = ml_collections.ConfigDict(dict(BACKFILL, **meta.config["model"]))
  tok = ckpt_lib.tokenizer_from_record(meta.tokenizer, tempfile.mkdtemp(prefix="tokenizer_"))
  return Source("workdir", directory, step, model_cfg, tok)


def own_checkpoint(workdir: str) -> Source | None:
  """The run's own newest checkpoint as a source (a resumed stage keeps its config and tokenizer)."""
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  return _workdir_source(directory, -1) if os.path.isdir(directory) else None


def _comparable(cfg: ml_collections.ConfigDict, name: str):
  return model_lib.head_dim(cfg) if name == "head_dim" else cfg.get(name)


def merge_model_config(stage_cfg: ml_collections.ConfigDict, source: Source,
                       key: str = "config.model") -> ml_collections.ConfigDict:
  """The source's architecture with the stage's run-time keys; a contradiction is an error."""
  src = source.model_cfg
  merged = ml_collections.ConfigDict(src.to_dict())
  for name, value in stage_cfg.items():
    if name == "max_len" and value is not None and src.positions == "rotary":
      merged[name] = value  # no parameter depends on it
    elif name not in ARCHITECTURE_KEYS:
      merged[name] = value
    elif value is not None:
      probe = ml_collections.ConfigDict(dict(src.to_dict(), **{name: value}))
      if _comparable(probe, name) != _comparable(src, name):
        raise UserError(f"{key}.{name}={value!r} contradicts the init_from source ({source.path}: "
                        f"{src.get(name)!r}); leave it unset to inherit it")
  return merged


def _relayer(params: dict, n_layers: int, scanned: bool) -> dict:
  """Scanned layers (one 'layers' tree, leading axis L) ⇄ 'layer_0' … 'layer_{L-1}'."""
  if scanned and "layers" not in params:
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *[params[f"layer_{i}"] for i in range(n_layers)])
    rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
    return {**rest, "layers": stacked}
  if not scanned and "layers" in params:
    rest = {k: v for k, v in params.items() if k != "layers"}
    return {**rest, **{f"layer_{i}": jax.tree.map(lambda x: x[i], params["layers"]) for i in range(n_layers)}}
  return params


def load_params(source: Source, model_cfg: ml_collections.ConfigDict, abstract_params) -> Any:
  """The source's parameters, placed like `abstract_params` (ShapeDtypeStructs with shardings);
  parameters only. Scanned and unscanned layouts convert into each other. Source parameters the
  target lacks are not read (a reward model's trunk leaves the LM head: lm/reward_model.py)."""
  shardings = jax.tree.map(lambda a: a.sharding, abstract_params)
  if source.kind == "hf":
    _, params = hf.import_checkpoint(source.path, scan_layers=model_cfg.scan_layers, shardings=shardings,
                                     head=model_cfg.head)
    return params
  if bool(source.model_cfg.scan_layers) == bool(model_cfg.scan_layers):
    target = {"params": abstract_params}
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
    path = os.path.join(source.path, str(source.step), "state")
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
    return restored["params"]
  # A different layer layout: read on the host in the source's layout, convert, then place.
  host = ocp.PyTreeCheckpointer().restore(os.path.join(source.path, str(source.step), "state"))["params"]
  host = _relayer(host, model_cfg.n_layers, model_cfg.scan_layers)
  return jax.device_put({k: v for k, v in host.items() if k in shardings}, shardings)


@dataclasses.dataclass
class Loaded:
  model: nn.Module
  params: Any
  tokenizer: Any
  mesh: Any
  rules: Any
  source: Source


def load_model(init_cfg, mesh, rules, runtime: dict | None = None, key: str = "init_from") -> Loaded:
  """A model to run (sample, chat, evaluate) from a workdir or an HF folder, on `mesh`."""
  source = resolve(init_cfg, key)
  model_cfg = ml_collections.ConfigDict(source.model_cfg.to_dict())
  model_cfg.update(runtime or {})
  params = load_params(source, model_cfg, abstract_params(model_cfg, mesh, rules))
  return Loaded(model_lib.build(model_cfg), params, source.tokenizer, mesh, rules, source)


def abstract_params(model_cfg, mesh, rules):
  """The model's parameters as ShapeDtypeStructs with their shardings on `mesh` (no FLOPs)."""
  sample = {"tokens_BT": jax.ShapeDtypeStruct((1, 8), "int32")}
  params_abs, shardings = train.param_shardings(model_lib.build(model_cfg), mesh, rules, sample)
  return ckpt_lib.abstract_with_shardings(params_abs, shardings)


def load_for_cli(workdir: str | None, hf_dir: str | None, step: int | None, tokenizer: str | None,
                 mesh, rules) -> Loaded:
  """Exactly one of --workdir / --hf_dir, with an optional --tokenizer override (nothing is written)."""
  if bool(workdir) == bool(hf_dir):
    raise UserError("give exactly one of --workdir (a training run) or --hf_dir (a Hugging Face folder)")
  source = ml_collections.ConfigDict({"workdir": workdir or "", "hf_dir": hf_dir or "",
                                      "step": -1 if step is None else step})
  loaded = load_model(source, mesh, rules, key="cli")
  if tokenizer is not None:
    loaded.tokenizer = (tokenizer_lib.HFTokenizer(hf_dir or "") if tokenizer == "hf"
                        else tokenizer_lib.load_tokenizer(tokenizer))
  if loaded.tokenizer is None:
    raise UserError("--tokenizer: the folder has no tokenizer.json; pass --tokenizer=byte or a saved tokenizer")
  if loaded.tokenizer.vocab_size > loaded.model.cfg.vocab_size:
    raise UserError(f"--tokenizer: vocabulary {loaded.tokenizer.vocab_size} exceeds the model's "
                    f"{loaded.model.cfg.vocab_size}")
  return loaded
