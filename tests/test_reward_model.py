"""The reward model: the k-way Bradley–Terry loss against its pairs by hand, the scalar head (no LM
head, padding on either side ignored), init_from an LM's trunk, Hugging Face *ForSequenceClassification
parity and round trip, the sharded step, and the stage as a user runs it (slow).

Tiny random models throughout (host-drawn parameters: a compiled init costs more than the tests).
The data side is tests/test_reward_data.py.
"""
import itertools
import json
import math
import os

import grain
import jax
import ml_collections
import numpy as np
import pytest

from configs import base
from lm import checkpoint as ckpt_lib
from lm import hf, hf_config, init_from, loop, losses, reward_model, sharding
from lm import model as model_lib
from lm.data import ranking_rows, rankings
from lm.errors import UserError
from lm.tokenizer import ByteTokenizer
from tests.test_reward_data import toy_rankings

T = 16


def score_config(style: str = "llama", **kw) -> ml_collections.ConfigDict:
  cfg = base.model_config("llama_tiny" if style == "llama" else "tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2 if style == "llama" else 4,
             d_ff=64, max_len=32, head="score")
  cfg.update(kw)
  return cfg


def shapes(cfg):
  import flax.linen as nn
  model = model_lib.build(cfg)
  return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 4), np.int32))["params"])


def init(cfg, seed=0, std=0.2):
  """Random parameters drawn on the host (norm scales 1, biases small): no compiled init needed."""
  rng = np.random.default_rng(seed)
  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(a.shape, np.float32)
    return (rng.normal(size=a.shape) * (std / 4 if "bias" in name else std)).astype(np.float32)
  return model_lib.build(cfg), jax.tree_util.tree_map_with_path(draw, shapes(cfg))


def scorer(model):
  return jax.jit(lambda params, tokens, mask: losses.last_token_scores(model, params, tokens, mask))


def hand_loss(scores, groups):
  """Σ over every ordered pair of every ranking of −log σ(s_better − s_worse), in plain Python."""
  total, n, right = 0.0, 0, 0
  for rows, ranking in groups:
    for i, j in ranking.pairs():
      d = float(scores[rows[i]] - scores[rows[j]])
      total += math.log1p(math.exp(-d))
      n, right = n + 1, right + (d > 0)
  return total, n, right


# ---------------------------------------------------------------- loss and pairs

def test_k_way_loss_is_the_sum_over_its_pairs():
  """A 5-way ranking (10 pairs), a 3-way one with a tie (2 pairs) and padding rows, shuffled in a batch."""
  five = rankings.Ranking((), tuple("abcde"), (3, 0, 4, 1, 2))
  tied = rankings.Ranking((), tuple("xyz"), (1, 0, 1))
  rows_five, rows_tied = [6, 0, 3, 9, 1], [2, 8, 5]           # rows 4, 7 are padding
  group, rank = np.zeros(10, np.int32), np.zeros(10, np.int32)
  for g, (rows, r) in enumerate([(rows_five, five), (rows_tied, tied)], 1):
    group[rows], rank[rows] = g, r.ranks
  scores = np.random.default_rng(0).normal(size=10).astype(np.float32)
  loss, aux = jax.device_get(losses.ranking_terms(scores, group, rank))
  want, n, right = hand_loss(scores, [(rows_five, five), (rows_tied, tied)])
  assert n == 12 and aux["weight"] == 12 and aux["accuracy"] == right
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  margin = sum(scores[rows[i]] - scores[rows[j]] for rows, r in [(rows_five, five), (rows_tied, tied)]
               for i, j in r.pairs())
  np.testing.assert_allclose(aux["margin"], margin, rtol=1e-5)
  # top1: the best reply of each ranking scores above every reply ranked below it.
  best = [scores[rows_five[1]] > max(scores[rows_five[k]] for k in (0, 2, 3, 4)),
          scores[rows_tied[1]] > max(scores[rows_tied[0]], scores[rows_tied[2]])]
  assert (aux["top1"], aux["top1/weight"]) == (sum(best), 2)

  # Through the model: one forward pass per response, the same sum.
  cfg = score_config()
  model, params = init(cfg)
  tokens = np.random.default_rng(1).integers(1, 64, (10, T)).astype(np.int32)
  mask = (np.arange(T) < np.random.default_rng(2).integers(3, T + 1, (10, 1))).astype(np.int32)
  batch = {"inputs": tokens, "mask": mask, "group": group, "rank": rank}
  loss, aux = jax.jit(losses.ranking(model))(params, batch, jax.random.key(0))
  s = np.asarray(scorer(model)(params, tokens, mask))
  np.testing.assert_allclose(loss, hand_loss(s, [(rows_five, five), (rows_tied, tied)])[0], rtol=1e-5)


@pytest.mark.parametrize("k", range(2, 8))
def test_pairs_of_a_ranking_are_complete_and_consistent(k):
  rng = np.random.default_rng(k)
  order = rng.permutation(k).tolist()             # indices, best first
  r = rankings.Ranking((), tuple(map(str, range(k))), rankings.dense_ranks(order, k))
  pairs = r.pairs()
  assert len(pairs) == k * (k - 1) // 2 == len({frozenset(p) for p in pairs})  # each unordered pair once
  for i, j in pairs:
    assert order.index(i) < order.index(j)          # better means earlier in the ranking
  for (a, b), (c, d) in itertools.product(pairs, pairs):
    if b == c:
      assert (a, d) in pairs                          # transitive
  # The in-batch mask the loss uses holds exactly these pairs.
  mask = np.asarray(losses.ranking_pairs(np.ones(k, np.int32), np.asarray(r.ranks, np.int32)))
  assert set(zip(*np.nonzero(mask))) == set(pairs)


def test_ties_make_no_pair():
  ranks = rankings.dense_ranks([2, [0, 3], 1], 4)
  assert ranks == (1, 2, 0, 1)
  assert sorted(rankings.Ranking((), tuple("abcd"), ranks).pairs()) == [(0, 1), (2, 0), (2, 1), (2, 3), (3, 1)]


# ---------------------------------------------------------------- the scalar-head model

@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_score_ignores_padding_left_or_right(style):
  cfg = score_config(style)
  model, params = init(cfg)
  rng = np.random.default_rng(0)
  lengths = [5, 12]
  seqs = [rng.integers(1, 64, n).astype(np.int32) for n in lengths]
  score = scorer(model)
  alone = [float(score(params, s[None], np.ones((1, s.size), np.int32))[0]) for s in seqs]
  for side in ("left", "right"):
    tokens = rng.integers(0, 64, (2, T)).astype(np.int32)   # padding holds arbitrary ids
    mask = np.zeros((2, T), np.int32)
    for b, s in enumerate(seqs):
      at = slice(T - s.size, T) if side == "left" else slice(0, s.size)
      tokens[b, at], mask[b, at] = s, 1
    got = np.asarray(score(params, tokens, mask))
    np.testing.assert_allclose(got, alone, atol=1e-5, err_msg=side)
  assert np.std(alone) > 0


@pytest.mark.parametrize("style,tied", [("gpt2", True), ("llama", False), ("llama", True)])
def test_score_model_has_no_lm_head_parameters(style, tied):
  params = shapes(score_config(style, tie_embeddings=tied))
  lm_params = shapes(score_config(style, tie_embeddings=tied, head="lm"))
  assert "lm_head" not in params and params["score"]["kernel"].shape == (32, 1)
  assert "embed" in params  # the input embedding stays, tied or not
  V, D = 64, 32
  assert model_lib.num_params(params) == model_lib.num_params(lm_params) - (0 if tied else V * D) + D
  out = jax.eval_shape(model_lib.build(score_config(style)).apply, {"params": params}, np.ones((2, 5), np.int32))
  assert out.shape == (2, 5) and out.dtype == np.float32
  with pytest.raises(UserError, match="config.model.head"):
    model_lib.build(score_config(head="value"))


# ---------------------------------------------------------------- Hugging Face *ForSequenceClassification

FAMILY_CONFIGS = {"gpt2": dict(style="gpt2"), "llama": dict(style="llama"),
                  "qwen2": dict(style="llama", qkv_bias=True, use_bias=False, tie_embeddings=True),
                  "qwen3": dict(style="llama", qk_norm=True, use_bias=False, head_dim=16, tie_embeddings=True)}
PAD = 0


def padded(seqs, side):
  tokens, mask = np.full((len(seqs), T), PAD, np.int32), np.zeros((len(seqs), T), np.int32)
  for b, s in enumerate(seqs):
    at = slice(T - s.size, T) if side == "left" else slice(0, s.size)
    tokens[b, at], mask[b, at] = s, 1
  return tokens, mask


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_hf_sequence_classification_scores_match_and_round_trip(family, tmp_path):
  """Export → transformers' *ForSequenceClassification scores each row at its last non-pad token
  exactly as we do, left- or right-padded; import gives back the same parameters and head."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kw = dict(FAMILY_CONFIGS[family])
  cfg = score_config(kw.pop("style"), **kw)
  model, params = init(cfg, seed=3)
  with pytest.raises(UserError, match="pad_token_id"):
    hf.export_checkpoint(params, cfg, str(tmp_path / "no_pad"))
  hf.export_checkpoint(params, cfg, str(tmp_path), pad_token_id=PAD)
  theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
  assert type(theirs).__name__ == hf_config.SCORE_ARCHITECTURES[family]
  assert theirs.config.num_labels == 1 and theirs.config.pad_token_id == PAD
  rng = np.random.default_rng(0)
  seqs = [rng.integers(1, 64, n).astype(np.int32) for n in (4, 11, 16)]
  score = scorer(model)
  results = []
  for side in ("left", "right"):
    tokens, mask = padded(seqs, side)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
      ref = theirs(input_ids=torch.as_tensor(tokens, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                   position_ids=torch.as_tensor(positions, dtype=torch.long)).logits.numpy()[:, 0]
    ours = np.asarray(score(params, tokens, mask))
    np.testing.assert_allclose(ours, ref, atol=1e-4, err_msg=side)
    results.append(ours)
  np.testing.assert_allclose(results[0], results[1], atol=1e-5)
  assert np.std(results[0]) > 0.1, "scores too flat for 1e-4 to mean anything"
  cfg_back, params_back = hf.import_checkpoint(str(tmp_path))
  assert cfg_back.head == "score" and cfg_back.tie_embeddings == cfg.tie_embeddings
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params_back, params)


def test_hf_folder_with_several_labels_is_refused(tmp_path):
  cfg = hf.config_to_hf(score_config())
  with pytest.raises(UserError, match="id2label.*exactly one"):
    hf.config_from_hf(dict(cfg, id2label={"0": "bad", "1": "good"}))


# ---------------------------------------------------------------- init_from: the trunk of a language model

def ranking_stage(model_cfg, n_devices=1, micro_batch=8, grad_accum=1, seq_len=T, lr=1e-2):
  mesh = sharding.make_mesh(base.mesh_config(data=n_devices), jax.devices()[:n_devices])
  opt = base.optimizer_config(lr=lr)
  opt.warmup_steps = 1
  return loop.build_stage(model_cfg, opt, 10, mesh, base.SHARDING_RULES, losses.ranking,
                          micro_batch=micro_batch, seq_len=seq_len, grad_accum=grad_accum, forward=losses.scores)


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
  """A language model's checkpoint (Llama style, untied LM head, byte tokenizer), as an SFT run leaves it."""
  config = ml_collections.ConfigDict({"seed": 0, "sharding_rules": base.SHARDING_RULES})
  config.model = score_config("llama", vocab_size=320, head="lm")
  _, params = init(config.model, seed=5)
  stage = loop.build_stage(config.model, base.optimizer_config(), 10,
                           sharding.make_mesh(base.mesh_config(data=1), jax.devices()[:1]), base.SHARDING_RULES,
                           losses.next_token, micro_batch=8, seq_len=T)
  wd = tmp_path_factory.mktemp("sft")
  data_iter = iter(grain.MapDataset.source(list(range(4))).to_iter_dataset())
  ck = ckpt_lib.Checkpointer(os.path.join(wd, "checkpoints"), keep=1, every=1, async_save=False)
  ck.save(3, stage.from_params(params), data_iter, config, ByteTokenizer(), force=True)
  ck.close()
  return str(wd), params


@pytest.mark.parametrize("scan_layers", [False, True], ids=["same_layout", "scanned"])
def test_init_from_a_language_model_keeps_its_trunk_and_adds_a_fresh_head(lm_workdir, scan_layers):
  wd, want = lm_workdir
  src = init_from.resolve(ml_collections.ConfigDict({"workdir": wd, "step": -1, "hf_dir": ""}))
  assert src.model_cfg.head == "lm"
  stage_cfg = base.inherited_model_config()
  stage_cfg.update(head="score", scan_layers=scan_layers)  # Orbax partial restore | host relayout
  cfg = init_from.merge_model_config(stage_cfg, src)
  stage = ranking_stage(cfg, n_devices=2)
  params = reward_model.load_params(src, stage, seed=0)
  assert "lm_head" not in params and "lm_head" in want
  for name in ("embed", "ln_final"):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params[name], want[name])
  up = params["layers"]["mlp"]["up"]["kernel"][1] if scan_layers else params["layer_1"]["mlp"]["up"]["kernel"]
  np.testing.assert_array_equal(np.asarray(up), want["layer_1"]["mlp"]["up"]["kernel"])
  head = np.asarray(params["score"]["kernel"])
  assert head.shape == (32, 1) and 0.005 < head.std() < 0.05  # normal(0, init_std=0.02)
  for got, sh in zip(jax.tree.leaves(params), jax.tree.leaves(stage.state_sh.params)):
    assert got.sharding == sh
  state = stage.from_params(params)  # trains from there: a fresh optimizer around them
  assert int(state.step) == 0


def test_init_from_hugging_face_folders(tmp_path):
  """A causal LM folder gives its trunk (the LM head is never read); a *ForSequenceClassification
  folder gives its own head."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False))
  lm.save_pretrained(str(tmp_path / "lm"))
  for folder, head_kept in ((tmp_path / "lm", False), (tmp_path / "rm", True)):
    if head_kept:
      cfg = score_config()
      _, want = init(cfg, seed=7)
      hf.export_checkpoint(want, cfg, str(folder), pad_token_id=PAD)
    else:
      _, want = hf.import_checkpoint(str(folder))
    src = init_from.resolve(ml_collections.ConfigDict({"workdir": "", "step": -1, "hf_dir": str(folder)}))
    assert src.model_cfg.head == ("score" if head_kept else "lm")
    stage_cfg = base.inherited_model_config()
    stage_cfg.head = "score"
    stage = ranking_stage(init_from.merge_model_config(stage_cfg, src))
    params = reward_model.load_params(src, stage, seed=0)
    assert "lm_head" not in params
    np.testing.assert_array_equal(np.asarray(params["layer_0"]["attn"]["query"]["kernel"]),
                                  want["layer_0"]["attn"]["query"]["kernel"])
    if head_kept:
      np.testing.assert_array_equal(np.asarray(params["score"]["kernel"]), want["score"]["kernel"])


# ---------------------------------------------------------------- the sharded step

@pytest.fixture(scope="module")
def ranking_batches():
  rows = ranking_rows.RankedRows(toy_rankings(24), ByteTokenizer(), T * 2, rows_per_chunk=8)
  it = iter(ranking_rows.dataset(rows, 2, seed=0))
  return [next(it) for _ in range(2)]        # two steps of 16 rows: 2 chunks interleaved


def run_ranking_steps(batches, n_devices, grad_accum):
  cfg = score_config(vocab_size=320)
  stage = ranking_stage(cfg, n_devices, micro_batch=16 // grad_accum, grad_accum=grad_accum, seq_len=T * 2)
  state = stage.from_params(init(cfg, seed=1, std=0.05)[1])
  out = []
  for b in batches:
    state, metrics = stage.train_step(state, sharding.host_batch_to_global(b, stage.mesh), jax.random.key(0))
    out.append({k: float(metrics[k]) for k in ("loss", "accuracy", "margin", "weight")})
  return out, jax.device_get(state.params)


def test_sharded_and_accumulated_steps_match_one_device(ranking_batches):
  """2 devices (batch axis) × 2 microbatches of whole rankings = 1 device, 1 microbatch: the same
  loss, pairs and parameters after two steps."""
  ref, ref_params = run_ranking_steps(ranking_batches, 1, 1)
  got, params = run_ranking_steps(ranking_batches, 2, 2)
  for a, b in zip(got, ref):
    assert a["weight"] == b["weight"] > 0
    np.testing.assert_allclose([a["loss"], a["accuracy"], a["margin"]], [b["loss"], b["accuracy"], b["margin"]],
                               rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, atol=2e-6)
  assert ref[1]["loss"] != ref[0]["loss"]


# ---------------------------------------------------------------- the stage, as a user runs it

def preference_file(path, n, seed=0):
  """Rankings a tiny model can learn: 'yes' > 'maybe' > 'no', whatever the prompt."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i in range(n):
      word = "".join(rng.choice(list("abcdefgh"), 4))
      replies = [f"no {word}", f"yes {word}", f"maybe {word}"]
      order = rng.permutation(3).tolist()
      f.write(json.dumps({"prompt": f"{word}?", "responses": [replies[k] for k in order],
                          "ranking": [order.index(1), order.index(2), order.index(0)]}) + "\n")


@pytest.mark.slow
def test_reward_model_stage_trains_reports_and_exports(lm_workdir, tmp_path):
  """experiments.reward_model from an LM workdir on ranked JSONL: the held-out accuracy rises, the
  report has its section, a bad line is one line naming file:line, and the result exports to HF."""
  import subprocess
  import sys
  from tests.conftest import ROOT, env
  data = tmp_path / "prefs.jsonl"
  preference_file(data, 120)
  args = [sys.executable, "-m", "experiments.reward_model", "--config=configs/reward_model.py:tiny",
          f"--config.init_from.workdir={lm_workdir[0]}", "--config.data.kind=ranked", f"--config.data.path={data}",
          "--config.train.steps=40", "--config.train.batch_size=12", "--config.train.seq_len=48",
          "--config.train.eval_every=40", "--config.train.ckpt_every=40", "--config.opt.lr=3e-3",
          "--config.opt.warmup_steps=2", "--config.data.val_fraction=0.25"]
  workdir = tmp_path / "rm"
  out = subprocess.run(args + [f"--workdir={workdir}"], env=env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl") if "val/accuracy" in l]
  assert rows[0]["step"] == 0 and rows[-1]["step"] == 40
  assert rows[-1]["val/accuracy"] > 0.9 and rows[-1]["val/loss"] < rows[0]["val/loss"]
  report = (workdir / "report.md").read_text()
  assert "## Held-out rankings" in report and "top-1" in report
  # The trained reward model exports as a sequence classifier.
  mesh = sharding.make_mesh(base.mesh_config(data=1), jax.devices()[:1])
  loaded = init_from.load_model(ml_collections.ConfigDict({"workdir": str(workdir), "hf_dir": "", "step": -1}),
                                mesh, base.SHARDING_RULES)
  assert loaded.source.model_cfg.head == "score" and "lm_head" not in loaded.params
  hf.export_checkpoint(loaded.params, loaded.source.model_cfg, str(tmp_path / "hf"),
                       pad_token_id=loaded.tokenizer.pad_id)
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]
  # A malformed line: exit 2, one line naming the file and line, nothing written.
  with open(data, "a") as f:
    f.write(json.dumps({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]}) + "\n")
  out = subprocess.run(args + [f"--workdir={tmp_path / 'bad'}"], env=env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
      f"error: {data}:121: \"ranking\" names response 0 twice")
  assert not (tmp_path / "bad").exists()
