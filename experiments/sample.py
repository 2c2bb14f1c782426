"""Continue a prompt with a trained model (KV-cache sampler), or answer through a few-shot template.

  python -m experiments.sample --workdir=runs/tiny --prompt="The tuple is"
  python -m experiments.sample --workdir=runs/tiny --few_shot_file=experiments/prompts/city_country.txt \
      --prompt=Rudford --temperature=0 --stop=. --max_new_tokens=16
  python -m experiments.sample --hf_dir=path/to/gpt2_folder --prompt="Hello" --tokenizer=hf

The model comes from the newest checkpoint of a training workdir (pretraining,
SFT, ...: its config and tokenizer are stored with it; parameters only are read,
nothing is written) or from a local Hugging Face folder, through `lm.init_from`. A few-shot file is plain
text: `{prompt}` inside it is replaced by --prompt; without it, the prompt is
appended. --stop strings end a sample (cut before the stop text).
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import flags

from lm.errors import MissingFile, UserError
from configs import base
from lm import cli, init_from, sampling, sharding

_M = cli.model_flags()
_FEW_SHOT = flags.DEFINE_string("few_shot_file", None, "Template file; '{prompt}' marks where --prompt goes.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples, decoded together as one batch.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop text (repeatable); backslash escapes like \\n work.")


def load(workdir, hf_dir, step, tokenizer) -> init_from.Loaded:
  mesh = sharding.make_mesh(base.mesh_config())
  return init_from.load_for_cli(workdir, hf_dir, step, tokenizer, mesh, tuple(base.SHARDING_RULES))


def build_prompt(prompt: str, few_shot_file: str | None) -> str:
  if not few_shot_file:
    return prompt
  if not os.path.isfile(few_shot_file):
    raise MissingFile(f"--few_shot_file: no such file {few_shot_file!r} (a text template; '{{prompt}}' marks "
                      f"where --prompt goes)")
  with open(few_shot_file, encoding="utf-8") as f:
    template = f.read()
  return template.replace("{prompt}", prompt) if "{prompt}" in template else template + prompt


def prompt_ids(tok, text: str) -> list[int]:
  ids = tok.encode(text)
  bos = getattr(tok, "bos_id", None)
  # Pretraining documents start with BOS: a prompt is the start of a document.
  return ([bos] if bos is not None and bos >= 0 else []) + ids


def setup():
  # Every argument is checked before the model is loaded.
  cli.check_model_flags()
  if _NUM.value < 1:
    raise UserError(f"--num_samples must be at least 1, got {_NUM.value}")
  text = build_prompt(_M.prompt.value, _FEW_SHOT.value)
  loaded = load(_M.workdir.value, _M.hf_dir.value, _M.step.value, _M.tokenizer.value)
  ids = prompt_ids(loaded.tokenizer, text)
  cfg = loaded.model.cfg
  max_new = _M.max_new_tokens.value
  if cfg.positions == "learned" and len(ids) + _M.max_new_tokens.value > cfg.max_len:
    room = cfg.max_len - len(ids)
    if _M.max_new_tokens.present or room < 1:
      raise UserError(f"--max_new_tokens: prompt ({len(ids)} tokens) + {_M.max_new_tokens.value} exceeds the "
                      f"model's max_len {cfg.max_len}; give at most --max_new_tokens={max(room, 0)}"
                      + (" and a shorter prompt" if room < 1 else ""))
    # The default is a budget, not a request: fill what the context leaves.
    print(f"note: generating {room} new tokens (the prompt's {len(ids)} fill the rest of max_len "
          f"{cfg.max_len}); --max_new_tokens sets it", file=sys.stderr)
    max_new = room
  return loaded, text, ids, max_new


def work(prepared) -> list[str]:
  loaded, text, ids, max_new = prepared
  tok = loaded.tokenizer
  eos = getattr(tok, "eos_id", None)
  t = time.perf_counter()
  out = sampling.generate(loaded.model, loaded.params, [ids] * _NUM.value, max_new,
                          temperature=_M.temperature.value, top_k=_M.top_k.value, top_p=_M.top_p.value,
                          seed=_M.seed.value, stop_ids=[eos] if eos is not None else [],
                          pad_id=getattr(tok, "pad_id", 0) or 0, mesh=loaded.mesh,
                          rule_pairs=loaded.rules)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  secs = time.perf_counter() - t
  stops = [cli.unescape(s) for s in _STOP.value]
  samples = []
  for row, n in zip(tokens, lengths):
    new = [i for i in row[:n].tolist() if i != eos]
    samples.append(sampling.cut_at_stop(tok.decode(new), stops)[0])
  for i, s in enumerate(samples):
    if len(samples) > 1:
      print(f"--- sample {i} ---")
    print(text + s, flush=True)
  print(json.dumps({"new_tokens": int(lengths.sum()), "seconds": round(secs, 3)}), file=sys.stderr)
  return samples


if __name__ == "__main__":
  cli.run(setup, work, required=())
