"""Continue a prompt with a trained model (KV-cache sampler), or answer through a few-shot template.

  python -m experiments.sample --workdir=runs/tiny --prompt="The tuple is"
  python -m experiments.sample --workdir=runs/tiny --few_shot_file=prompts/capitals.txt \
      --prompt="Quenmoor" --temperature=0 --stop="\\n"
  python -m experiments.sample --hf_dir=path/to/gpt2_folder --prompt="Hello" --tokenizer=hf

The model comes from the newest checkpoint of an experiments.pretrain workdir
(its config and tokenizer are stored with it; the checkpoints are opened read
only) or from a local Hugging Face folder (lm.hf). A few-shot file is plain
text: `{prompt}` inside it is replaced by --prompt; without it, the prompt is
appended. --stop strings end a sample (cut before the stop text).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import flags

from configs import base
from lm import checkpoint as ckpt_lib
from lm import cli, hf, sampling, sharding, train
from lm import model as model_lib
from lm import tokenizer as tokenizer_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "experiments.pretrain workdir to load the newest checkpoint from.")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "Or: a Hugging Face folder (config.json + safetensors).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Override: byte | hf (the folder's tokenizer.json) | a saved tokenizer file.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue (or to put into the few-shot template).")
_FEW_SHOT = flags.DEFINE_string("few_shot_file", None, "Template file; '{prompt}' marks where --prompt goes.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: off).")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "Nucleus mass to keep (1: off).")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples, decoded together as one batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop text (repeatable); backslash escapes like \\n work.")


class HFTokenizer:
  """A Hugging Face tokenizer.json behind our tokenizer surface (needs the `tokenizers` package)."""

  def __init__(self, folder: str):
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"--tokenizer=hf: {path} not found")
    from tokenizers import Tokenizer
    self._tok = Tokenizer.from_file(path)
    self.vocab_size = self._tok.get_vocab_size()
    cfg = hf.read_hf_config(folder)
    eos = cfg.get("eos_token_id")
    self.eos_id = eos[0] if isinstance(eos, list) else eos
    self.bos_id = cfg.get("bos_token_id")
    self.pad_id = cfg.get("pad_token_id") or 0

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids])


@dataclasses.dataclass
class Loaded:
  model: nn.Module
  params: Any
  tokenizer: Any
  mesh: Any
  rule_pairs: Any


def _mesh_and_rules(config: ml_collections.ConfigDict | None):
  from configs import base
  mesh_cfg = config.mesh if config is not None and "mesh" in config else base.mesh_config()
  rules = sharding.rules(config) if config is not None and "sharding_rules" in config else base.SHARDING_RULES
  return sharding.make_mesh(mesh_cfg), tuple(rules)


def load_workdir(workdir: str, step: int | None = None) -> Loaded:
  """Params, model and tokenizer of an experiments.pretrain checkpoint; nothing is written."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"--workdir: no checkpoints in {directory} (train with experiments.pretrain first)")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data", "config", "tokenizer"),
                                  options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"--step: no finished checkpoint {step} in {directory} "
                            f"(have {sorted(manager.all_steps())})")
  meta = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore(),
                                                       tokenizer=ocp.args.JsonRestore()))
  config = ml_collections.ConfigDict(meta.config)
  # Model keys added after the checkpoint was written keep their defaults.
  model_cfg = base.model_config("tiny")
  model_cfg.update(config.model)
  config.model = model_cfg
  tok = ckpt_lib.tokenizer_from_record(meta.tokenizer, tempfile.mkdtemp(prefix="tokenizer_"))
  model = model_lib.build(config.model)
  mesh, rule_pairs = _mesh_and_rules(config)
  tx, _ = train.make_optimizer(config.opt, config.train.steps)
  sample = {"tokens_BT": jax.ShapeDtypeStruct((1, 8), np.int32)}
  state_abs, state_sh = train.state_shardings(model, tx, mesh, rule_pairs, sample)
  target = ckpt_lib.abstract_with_shardings(state_abs, state_sh)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
  manager.close()
  return Loaded(model, state.params, tok, mesh, rule_pairs)


def load_hf(folder: str) -> Loaded:
  mesh, rule_pairs = _mesh_and_rules(None)
  cfg, params = hf.import_checkpoint(folder, mesh=mesh, rule_pairs=rule_pairs)
  return Loaded(model_lib.build(cfg), params, None, mesh, rule_pairs)


def resolve_tokenizer(loaded: Loaded, spec: str | None, hf_dir: str | None):
  if spec is None and loaded.tokenizer is not None:
    return loaded.tokenizer
  if spec == "hf" or (spec is None and hf_dir):
    if not hf_dir:
      raise ValueError("--tokenizer=hf needs --hf_dir")
    return HFTokenizer(hf_dir)
  if spec != "byte" and not os.path.exists(spec):
    raise FileNotFoundError(f"--tokenizer: no such file {spec!r}")
  return tokenizer_lib.load_tokenizer(spec)


def load(workdir: str | None, hf_dir: str | None, step: int | None, tokenizer: str | None) -> Loaded:
  """The one entry the CLIs share: exactly one of --workdir / --hf_dir."""
  if bool(workdir) == bool(hf_dir):
    raise ValueError("give exactly one of --workdir (a pretraining run) or --hf_dir (a Hugging Face folder)")
  loaded = load_workdir(workdir, step) if workdir else load_hf(hf_dir)
  loaded.tokenizer = resolve_tokenizer(loaded, tokenizer, hf_dir)
  if loaded.tokenizer.vocab_size > loaded.model.cfg.vocab_size:
    raise ValueError(f"--tokenizer: vocabulary {loaded.tokenizer.vocab_size} exceeds the model's "
                     f"{loaded.model.cfg.vocab_size}")
  return loaded


def unescape(text: str) -> str:
  return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text


def build_prompt(prompt: str, few_shot_file: str | None) -> str:
  if not few_shot_file:
    return prompt
  if not os.path.exists(few_shot_file):
    raise FileNotFoundError(f"--few_shot_file: no such file {few_shot_file!r}")
  with open(few_shot_file, encoding="utf-8") as f:
    template = f.read()
  return template.replace("{prompt}", prompt) if "{prompt}" in template else template + prompt


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
  """The text before the earliest stop string, and whether one was found."""
  hits = [text.index(s) for s in stops if s and s in text]
  return (text[:min(hits)], True) if hits else (text, False)


def prompt_ids(tok, text: str) -> list[int]:
  ids = tok.encode(text)
  bos = getattr(tok, "bos_id", None)
  # Pretraining documents start with BOS: a prompt is the start of a document.
  return ([bos] if bos is not None and bos >= 0 else []) + ids


def setup():
  loaded = load(_WORKDIR.value, _HF_DIR.value, _STEP.value, _TOKENIZER.value)
  text = build_prompt(_PROMPT.value, _FEW_SHOT.value)
  ids = prompt_ids(loaded.tokenizer, text)
  cfg = loaded.model.cfg
  if cfg.positions == "learned" and len(ids) + _MAX_NEW.value > cfg.max_len:
    raise ValueError(f"--max_new_tokens: prompt ({len(ids)} tokens) + {_MAX_NEW.value} exceeds the "
                     f"model's max_len {cfg.max_len}")
  if _NUM.value < 1:
    raise ValueError("--num_samples must be at least 1")
  return loaded, text, ids


def work(prepared) -> list[str]:
  loaded, text, ids = prepared
  tok = loaded.tokenizer
  eos = getattr(tok, "eos_id", None)
  t = time.perf_counter()
  out = sampling.generate(loaded.model, loaded.params, [ids] * _NUM.value, _MAX_NEW.value,
                          temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                          seed=_SEED.value, stop_ids=[eos] if eos is not None else [],
                          pad_id=getattr(tok, "pad_id", 0) or 0, mesh=loaded.mesh,
                          rule_pairs=loaded.rule_pairs)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  secs = time.perf_counter() - t
  stops = [unescape(s) for s in _STOP.value]
  samples = []
  for row, n in zip(tokens, lengths):
    new = [i for i in row[:n].tolist() if i != eos]
    samples.append(cut_at_stop(tok.decode(new), stops)[0])
  for i, s in enumerate(samples):
    if len(samples) > 1:
      print(f"--- sample {i} ---")
    print(text + s, flush=True)
  print(json.dumps({"new_tokens": int(lengths.sum()), "seconds": round(secs, 3)}), file=sys.stderr)
  return samples


if __name__ == "__main__":
  cli.run(setup, work, required=())
