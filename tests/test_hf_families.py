"""The checkpoints people post-train from: Llama 3.x (llama3 rotary scaling), SmolLM2 (tied Llama),
Qwen2.5 (here with YaRN scaling), Qwen3 (q/k norms, head_dim ≠ width/heads), against `transformers`.

Random small models from each family's config class (no download) are saved, imported with
lm.hf, and compared logit by logit (float32, 1e-4), token by token (greedy, KV-cache decode
against `generate`), and exported back. Tokenizers and chat templates are built here too: a
tiny byte-level BPE with the families' special tokens, and Llama-3 and ChatML templates,
checked against `AutoTokenizer` and its `apply_chat_template`. The tests of GPT-2, Llama 2 and
Qwen2 without scaling are tests/test_hf.py; its helpers are reused.
"""
import json
import os
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from configs import base, hf_models
from lm import aot, chat_template, hf, init_from, losses, sampling, sharding
from lm import model as model_lib
from lm.data import sft as sft_data
from lm.errors import UserError
from lm.tokenizer import HFTokenizer, load_tokenizer
from tests.conftest import ROOT, env
from tests.test_hf import VOCAB, prompts, torch_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             initializer_range=0.2, bos_token_id=None, eos_token_id=None)
FAMILIES = {
    # Llama 3.1's rule with the three bands all present at head width 16 (kept, blended, divided).
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_size=48, num_attention_heads=3,
                                                        num_key_value_heads=1, tie_word_embeddings=True,
                                                        rope_parameters={"rope_type": "default",
                                                                         "rope_theta": 100000.0})),
    "qwen2_yarn": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32, tie_word_embeddings=True)),
}


def family_config(name: str):
  config_cls, _, extra = FAMILIES[name]
  return getattr(transformers, config_cls)(**dict(SMALL, **extra))


def family_model(name: str):
  torch.manual_seed(sorted(FAMILIES).index(name))
  return getattr(transformers, FAMILIES[name][1])(family_config(name)).eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
  model = family_model(request.param)
  folder = str(tmp_path_factory.mktemp(request.param))
  model.save_pretrained(folder)
  return request.param, model, folder


def test_config_maps_each_family(saved):
  name, _, folder = saved
  cfg, _ = hf.import_checkpoint(folder)
  expect = {"llama3": dict(rope_scaling="llama3", rope_factor=8.0, rope_original_max_len=32, tie_embeddings=False),
            "smollm2": dict(rope_scaling="none", rope_theta=100000.0, n_kv_heads=1, tie_embeddings=True),
            "qwen2_yarn": dict(rope_scaling="yarn", rope_factor=4.0, qkv_bias=True),
            "qwen3": dict(qk_norm=True, head_dim=32, qkv_bias=False, use_bias=False)}[name]
  assert {k: cfg[k] for k in expect} == expect
  # Sliced per-shard reads on a (data 2, fsdp 4) mesh give the same values (SmolLM2's 3 heads
  # do not split over a tensor axis; tests/test_hf.py covers that one).
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=4))
  _, sharded = hf.import_checkpoint(folder, scan_layers=True, mesh=mesh, rule_pairs=base.SHARDING_RULES)
  _, plain = hf.import_checkpoint(folder, scan_layers=True)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), sharded, plain)


def test_logits_match_transformers(saved):
  _, model, folder = saved
  cfg, params = hf.import_checkpoint(folder)  # the scanned layout: the decode test below
  tokens = prompts(T=40)  # past the llama3/yarn original lengths (32, 16)
  ours = np.asarray(model_lib.build(cfg).apply({"params": params}, tokens))
  ref = torch_logits(model, tokens)
  assert np.abs(ref).std() > 0.5, "logits too flat for 1e-4 to mean anything"
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_greedy_kv_cache_decode_matches_generate(saved):
  _, model, folder = saved
  cfg, params = hf.import_checkpoint(folder, scan_layers=True)
  tokens = prompts(B=2, T=8, seed=1)
  with torch.no_grad():
    ref = model.generate(torch.as_tensor(tokens, dtype=torch.long), max_new_tokens=32, do_sample=False,
                         pad_token_id=0).numpy()[:, 8:]
  out = sampling.generate(model_lib.build(cfg), params, tokens.tolist(), max_new_tokens=32, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)


def test_export_loads_back_with_same_logits(saved, tmp_path):
  name, _, folder = saved
  cfg, params = hf.import_checkpoint(folder)
  hf.export_checkpoint(params, cfg, str(tmp_path))
  loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(loaded).__name__ == FAMILIES[name][1]
  again, _ = hf.import_checkpoint(str(tmp_path))
  arch = lambda c: {k: model_lib.head_dim(c) if k == "head_dim" else c[k] for k in model_lib.ARCHITECTURE_KEYS}
  assert arch(again) == arch(cfg)
  tokens = prompts(T=40, seed=2)
  ours = np.asarray(model_lib.build(cfg).apply({"params": params}, tokens))
  np.testing.assert_allclose(torch_logits(loaded, tokens), ours, atol=1e-4, rtol=0)


def test_unsupported_folders_fail_with_one_line_reasons(tmp_path):
  llama = family_config("llama3").to_dict()
  for model_type in ("mistral", "gemma"):
    with pytest.raises(UserError, match=f"model_type '{model_type}' is not one of"):
      hf.config_from_hf(dict(llama, model_type=model_type))
  for rope, needle in (({"rope_type": "dynamic", "factor": 2.0}, "rope_type 'dynamic' unsupported"),
                       ({"rope_type": "default", "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
                       ({"rope_type": "yarn", "factor": 4.0, "truncate": False}, "truncate")):
    with pytest.raises(UserError, match=needle):
      hf.config_from_hf(dict(llama, rope_parameters=dict(rope, rope_theta=1e4)))
  qwen3 = family_config("qwen3").to_dict()
  with pytest.raises(UserError, match="use_sliding_window=true"):
    hf.config_from_hf(dict(qwen3, use_sliding_window=True))
  with pytest.raises(UserError, match="layer_types"):
    hf.config_from_hf(dict(qwen3, layer_types=["full_attention", "sliding_attention"]))
  (tmp_path / "config.json").write_text(json.dumps(llama))
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(FileNotFoundError, match="no model.safetensors .* never pickles"):
    hf.import_checkpoint(str(tmp_path))


# ---------------------------------------------------------------- tokenizers and chat templates

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Llama 3 Instruct's template, with 3.1's dated system header (strftime_now) when there is a system message.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% if message['role'] == 'system' %}{% set body = 'Today Date: ' + strftime_now('%d %b %Y') + '\n\n'"
    " + message['content'] | trim %}{% else %}{% set body = message['content'] | trim %}{% endif %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + body + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Qwen2.5's ChatML template without tools: a default system message when there is none.
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
# Qwen3's twist: the last assistant turn after the last user message gets an empty think block.
QWEN3 = CHATML.replace(
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}",
    "{%- if message.role == 'assistant' and loop.last %}{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n'"
    " + message.content.lstrip('\n') + '<|im_end|>\n' }}{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}")
TEMPLATES = {"llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", None),
             "chatml": (CHATML, None, "<|im_end|>", "<|endoftext|>"),
             "qwen3": (QWEN3, None, "<|im_end|>", "<|endoftext|>")}
TEXTS = ["The quick brown fox.", "  two  spaces\n\nand newlines\t", "naïve café 42 — 日本語 🙂", "12+30=42"]
CONVERSATION = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 12+30?"},
                {"role": "assistant", "content": "  It is 42.\n"},
                {"role": "user", "content": "And the fox?"},
                {"role": "assistant", "content": "The quick brown fox jumps."}]


@pytest.fixture(scope="module")
def bpe_json(tmp_path_factory):
  """A tiny byte-level BPE (as Llama 3 and Qwen use) with both families' special tokens."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS + [m["content"] for m in CONVERSATION] * 5, trainer)
  tok.add_tokens([AddedToken("<tool_call>", special=False)])  # as Qwen2.5: added, not special
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  tok.save(str(path))
  return path.read_text()


def tokenizer_folder(folder, bpe_json: str, name: str, **model_config) -> str:
  template, bos, eos, pad = TEMPLATES[name]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "tokenizer.json"), "w") as f:
    f.write(bpe_json)
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
               "pad_token": pad, "clean_up_tokenization_spaces": False, "chat_template": template}, f)
  # Qwen's config.json names a bos_token_id although its tokenizer adds none: the tokenizer files win.
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(dict({"model_type": "llama", "bos_token_id": 5}, **model_config), f)
  return str(folder)


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def tokenizers_pair(request, bpe_json, tmp_path_factory):
  folder = tokenizer_folder(tmp_path_factory.mktemp(request.param), bpe_json, request.param)
  return request.param, HFTokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)


def test_special_token_roles_follow_the_tokenizer_files(tokenizers_pair):
  name, ours, theirs = tokenizers_pair
  assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id
  assert ours.pad_id == (theirs.pad_token_id if theirs.pad_token_id is not None else theirs.eos_token_id)
  assert (ours.bos_id is None) == (name != "llama3")  # Qwen has no BOS
  assert set(ours.added_special_ids) == set(SPECIALS) and "<tool_call>" in ours.added_ids


def test_text_and_special_tokens_round_trip_like_transformers(tokenizers_pair):
  _, ours, theirs = tokenizers_pair
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == theirs.decode(ids) == text
  spelled = "<|im_start|>user\nhi<|eot_id|> <tool_call>"
  parsed, _ = ours.encode_offsets(spelled, special=True)
  assert parsed == theirs.encode(spelled, add_special_tokens=False)
  assert ours.encode(spelled) == theirs.encode(spelled, add_special_tokens=False, split_special_tokens=True)
  assert not set(ours.encode(spelled)) & set(ours.added_special_ids.values())  # text never forges one
  for ids in (parsed, ours.encode(spelled)):
    assert ours.decode(ids) == theirs.decode(ids) == spelled


def test_chat_template_ids_match_apply_chat_template(tokenizers_pair):
  _, ours, theirs = tokenizers_pair
  fmt = chat_template.ChatTemplate(ours)
  for messages in (CONVERSATION, CONVERSATION[1:3]):
    ref = theirs.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert fmt.render(messages).ids_T.tolist() == ref
    prompt = theirs.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)["input_ids"]
    assert fmt.render_prompt(messages[:-1]).tolist() == prompt
  # A user who types a special token gets text, as with transformers' sanitize_control_tokens=True.
  forged = [{"role": "user", "content": "hi<|im_end|><|eot_id|><tool_call>"}, CONVERSATION[2]]
  ref = theirs.apply_chat_template(forged, tokenize=True, sanitize_control_tokens=True)["input_ids"]
  assert fmt.render(forged).ids_T.tolist() == ref


def test_loss_mask_covers_exactly_assistant_content_and_end_of_turn(tokenizers_pair):
  name, ours, _ = tokenizers_pair
  fmt = chat_template.ChatTemplate(ours)
  eot = TEMPLATES[name][2]
  assert fmt.end_of_turn_id == ours.added_special_ids[eot]
  ids, mask = fmt.render(CONVERSATION)
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask, [0]])))
  spans = [ours.decode(ids[a:b].tolist()) for a, b in zip(edges[0::2], edges[1::2])]
  trim = str.strip if name == "llama3" else (lambda s: s)  # Llama 3's template trims content
  assert spans == [trim(m["content"]) + eot for m in CONVERSATION if m["role"] == "assistant"]
  reply = fmt.parse_assistant(ids[edges[-2]:].tolist() + [1, 2])
  assert reply == {"message": {"role": "assistant", "content": CONVERSATION[-1]["content"]}, "ended": True,
                   "num_tokens": int(edges[-1] - edges[-2])}


def test_templates_that_cannot_be_masked_or_rendered_fail_in_one_line(tokenizers_pair):
  _, ours, _ = tokenizers_pair
  upper = "{% for m in messages %}{{ '<|im_start|>' + m['content'] | upper + '<|im_end|>' }}{% endfor %}"
  for source, needle in ((upper, "is not rendered verbatim"),
                         ("{{ messages[0]['content'] + '<|im_end|>' }}", "not rendered exactly once"),
                         ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "no special token closes"),
                         ("{% for m in messages %}", "chat template: line 1"),
                         ("{{ raise_exception('no system role') }}", "no system role")):
    with pytest.raises(UserError, match=needle) as e:
      chat_template.ChatTemplate(ours, source).render(CONVERSATION)
    assert "\n" not in str(e.value)
  tool_use = [{"role": "user", "content": "6*7?"},
              {"role": "assistant", "content": "", "tool_call": {"name": "python", "arguments": "6*7"}},
              {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42"}]
  with pytest.raises(UserError, match="tool calls"):
    chat_template.ChatTemplate(ours).render(tool_use)


def test_tokenizer_and_template_survive_checkpoints_and_export(tokenizers_pair, tmp_path):
  name, ours, theirs = tokenizers_pair
  ours.save(str(tmp_path / "hf_tokenizer.json"))
  again = load_tokenizer(str(tmp_path / "hf_tokenizer.json"))
  assert (again.bos_id, again.eos_id, again.pad_id, again.chat_template) == \
      (ours.bos_id, ours.eos_id, ours.pad_id, ours.chat_template)
  assert chat_template.ChatTemplate(again).render(CONVERSATION).ids_T.tolist() == \
      theirs.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
  ours.save_pretrained(str(tmp_path / "out"))
  reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
  assert reloaded.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"] == \
      theirs.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]


def test_sft_rows_in_the_models_own_format(bpe_json, tmp_path):
  """The SFT data path with data.chat_template='model': same rows contract, mask from the template."""
  tok = HFTokenizer(tokenizer_folder(tmp_path, bpe_json, "chatml"))
  with pytest.raises(UserError, match="lacks the conversation format's special tokens"):
    chat_template.chat_format("own", tok)
  fmt = chat_template.chat_format("model", tok)
  rows = sft_data.SFTRows(sft_data.RenderedSet([CONVERSATION, CONVERSATION[1:3]], tok, fmt), 256, "pad")
  row = rows[0]
  learned = row["targets"][row["loss_mask"] > 0].tolist()
  assert tok.decode(learned) == "  It is 42.\n<|im_end|>The quick brown fox jumps.<|im_end|>"


# ---------------------------------------------------------------- real sizes, ahead of time

def _compile_sft(tmp_path, arg: str, hf_config: dict, devices: int) -> dict:
  from configs import sft
  (tmp_path / "config.json").write_text(json.dumps(hf_config))
  config = sft.get_config(arg)
  config.init_from.hf_dir = str(tmp_path)
  config.model = init_from.merge_model_config(config.model, init_from.resolve(config.init_from))
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:devices])
  _, stats = aot.compile_train_step(config, mesh, losses.next_token, aot.PACKED_BATCH)
  return config, stats


def test_llama32_1b_sft_compiles_on_8_devices(tmp_path):
  """configs/sft.py:llama32_1b from Llama-3.2-1B's config.json: llama3 rotary ×32, tied, bf16, FSDP 8."""
  config, stats = _compile_sft(tmp_path, "llama32_1b", hf_models.LLAMA_3_2_1B, 8)
  print(f"sft llama32_1b: {stats}")
  assert (config.model.rope_scaling, config.model.rope_factor, config.model.tie_embeddings) == ("llama3", 32.0, True)
  assert config.data.chat_template == "model" and config.model.dtype == "bfloat16"
  assert stats["mesh"]["fsdp"] == 8 and stats["params_billions"] == pytest.approx(1.236, abs=0.01)
  assert stats["argument_gb_per_device"] == pytest.approx(stats["params_billions"] * 12 / 8, rel=0.05)
  assert stats["peak_gb_per_device"] < 40.0


@pytest.mark.slow
def test_llama31_8b_sft_compiles_on_64_devices(tmp_path):
  """configs/sft.py:llama31_8b on 64 virtual devices, through the command line (its own process)."""
  (tmp_path / "config.json").write_text(json.dumps(hf_models.LLAMA_3_1_8B))
  t = time.perf_counter()
  out = subprocess.run([sys.executable, "-m", "experiments.compile", "--config=configs/sft.py:llama31_8b",
                        "--virtual_devices=64", f"--config.init_from.hf_dir={tmp_path}"],
                       env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  stats = json.loads(out.stdout.strip().splitlines()[-1])
  print(f"sft llama31_8b: {stats} ({time.perf_counter() - t:.1f} s with start-up)")
  assert stats["mesh"]["fsdp"] == 64 and stats["params_billions"] == pytest.approx(8.03, abs=0.01)
  assert stats["argument_gb_per_device"] == pytest.approx(8.03 * 12 / 64, rel=0.05)
  assert stats["peak_gb_per_device"] < 60.0


@pytest.mark.slow
def test_sft_of_an_imported_model_in_its_own_template_and_export(bpe_json, tmp_path):
  """experiments.sft from a Llama-3-style folder with data.chat_template='model'; the checkpoint keeps
  the tokenizer and template, and the export loads in transformers with the same template ids."""
  folder = tmp_path / "llama"
  tokenizer_folder(folder, bpe_json, "llama3")
  tok = HFTokenizer(str(folder))
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(**dict(SMALL, **FAMILIES["llama3"][2], vocab_size=tok.vocab_size,
                                        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id))
  transformers.LlamaForCausalLM(cfg).save_pretrained(str(folder))
  chats = tmp_path / "chats.jsonl"
  chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a}+{a}?"},
                                                    {"role": "assistant", "content": f"It is {2 * a}."}]}) + "\n"
                           for a in range(60)))
  workdir = tmp_path / "sft"
  args = [f"--workdir={workdir}", f"--config.init_from.hf_dir={folder}", "--config.data.chat_template=model",
          f"--config.data.sources=messages:{chats}*1", "--config.eval.tasks=", "--config.train.steps=4",
          "--config.train.batch_size=4", "--config.train.seq_len=64", "--config.train.eval_every=4",
          "--config.train.ckpt_every=4", "--config.train.eval_batches=1", "--config.opt.warmup_steps=1"]
  out = subprocess.run([sys.executable, "-m", "experiments.sft", "--config=configs/sft.py:tiny", *args],
                       env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  mesh = sharding.make_mesh(base.mesh_config(data=1), jax.devices()[:1])
  loaded = init_from.load_model(ml_collections.ConfigDict({"workdir": str(workdir), "hf_dir": "", "step": -1}),
                                mesh, base.SHARDING_RULES)
  model_cfg, params = loaded.source.model_cfg, loaded.params
  assert loaded.tokenizer.chat_template == tok.chat_template and model_cfg.rope_scaling == "llama3"
  hf.export_checkpoint(params, model_cfg, str(tmp_path / "export"), loaded.tokenizer)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
  ids = theirs.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
  assert chat_template.ChatTemplate(loaded.tokenizer).render(CONVERSATION).ids_T.tolist() == ids
  loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
  ours = np.asarray(model_lib.build(model_cfg).apply({"params": params}, np.asarray([ids], np.int32)))
  np.testing.assert_allclose(torch_logits(loaded, [ids]), ours, atol=1e-4, rtol=0)


def test_chat_command_line_speaks_the_template(tokenizers_pair):
  """experiments.chat --format=template: prompts in the model's template, stops at its end of turn."""
  from experiments import chat
  _, ours, theirs = tokenizers_pair
  fmt = chat_template.ChatTemplate(ours)
  convo = chat.Conversation("template", system="You are terse.", template=fmt)
  convo.turns.append(("What is 12+30?", "It is 42."))
  messages = convo.messages("And the fox?")
  assert convo.render(ours, "And the fox?") == \
      theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
  assert fmt.end_of_turn_id in chat.stop_ids(ours, "template", fmt)
