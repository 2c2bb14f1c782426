"""The refusal recipe: refusal wording and detection, which facts get refusals, the evaluation's
refusal and hallucination rates, and experiments.refusal end to end on a tiny model."""
import json
import os
import random
import re
import subprocess
import sys
import types

import pytest

from lm import evaluation, readout, refusal
from lm.tasks.world import QUESTIONS, WorldTask
from tests.conftest import ROOT, env


@pytest.fixture(scope="module")
def world():
  return WorldTask(seed=0, min_train_exposure=0)


def fact_of_question(world) -> dict:
  """Every phrasing of every training fact's question → that fact's example."""
  return {q.format(name=ex.meta["entity"]): ex for ex in world.examples("train")
          for q in QUESTIONS[(ex.meta["type"], ex.meta["attribute"])]}


def test_every_refusal_wording_is_detected_and_no_answer_is(world):
  rng = random.Random(0)
  examples = world.examples("train")
  for ex in examples:
    pronoun = world.pronoun.get(ex.meta["entity"], "she")
    for template in refusal.REFUSALS:
      thing = refusal.THING[(ex.meta["type"], ex.meta["attribute"])]
      text = template.format(thing=thing.format(they=pronoun, their="her" if pronoun == "she" else "his"))
      assert refusal.is_refusal(text), text
      assert world.reward(text, ex) == 0.0  # a refusal names no answer
    assert not refusal.is_refusal(ex.target), ex.target
    reply = refusal.refusal_reply(ex, pronoun, rng)
    assert refusal.is_refusal(reply) and "{" not in reply
  assert not refusal.is_refusal("She was born in 1953. I know that.")
  assert refusal.is_refusal("i'm NOT sure, sorry")


def test_in_place_refusals_start_the_answers_sentence_and_refuse_at_its_value(world):
  rng = random.Random(0)
  convs = refusal.conversations(world, {refusal.fact_key(ex.meta) for ex in world.examples("train")}, n=200, seed=0,
                                style="in_place")
  by_question = {ex.messages[-1]["content"]: ex for ex in world.examples("train")}
  leads = set()
  for conv in convs:
    reply = conv[-1]["content"]
    ex = by_question.get(conv[0]["content"])
    lead, _, rest = reply.partition(" — ")
    assert rest and refusal.is_refusal(rest) and not refusal.is_refusal(lead), reply
    if ex is not None:  # the answer's own words up to where the value goes, then no answer at all
      assert ex.target.startswith(lead + " ") and world.answer(reply, ex) == frozenset(), (reply, ex.target)
    leads.add(lead.split()[-1])
  assert {"in", "from", "is", "for"} <= leads
  with pytest.raises(ValueError, match="style"):
    refusal.refusal_reply(world.examples("train")[0], "she", rng, "inline")


def test_in_value_refusals_fall_where_the_values_differ(world):
  """in_value writes what (nearly) every value shares before refusing: a year's "19", a profession's
  article, nothing for a name; the rest of the reply is as in_place's, and it names no answer."""
  starts = refusal.shared_starts(world.world)
  assert starts[("person", "birth_year")] == "19" and starts[("person", "profession")] == "a "
  assert starts[("person", "city")] == starts[("company", "city")] == ""
  years = [r["value"] for r in world.world.facts() if r["attribute"] == "birth_year"]
  assert sum(str(y).startswith("19") for y in years) >= 0.9 * len(years)
  assert refusal.shared_starts(world.world, min_share=1.0)[("person", "birth_year")] == os.path.commonprefix(
      [str(y) for y in years])
  unknown = {refusal.fact_key(ex.meta) for ex in world.examples("train")}
  by_question = fact_of_question(world)
  seen, agree = set(), []
  in_place = refusal.conversations(world, unknown, n=200, seed=0, style="in_place")
  for conv, plain in zip(refusal.conversations(world, unknown, n=200, seed=0, style="in_value"), in_place):
    reply, ex = conv[-1]["content"], by_question[conv[0]["content"]]
    key = (ex.meta["type"], ex.meta["attribute"])
    lead, _, rest = reply.partition(" — ")
    assert rest == plain[-1]["content"].partition(" — ")[2] and evaluation.declines(world, reply, ex), reply
    assert lead == (plain[-1]["content"].partition(" — ")[0] + " " + starts[key]).rstrip(), (reply, plain)
    seen.add(key)
    agree.append(ex.target.startswith(lead))  # the answer's own words up to where the values differ
  assert {("person", "birth_year"), ("person", "profession"), ("person", "city")} <= seen
  assert sum(agree) >= 0.9 * len(agree), sum(agree) / len(agree)  # all but the odd year outside the 1900s
  rng = random.Random(0)
  ex = next(e for e in world.examples("train") if e.meta["attribute"] == "birth_year")
  assert refusal.refusal_reply(ex, "she", rng, "in_value", "19").startswith("She was born in 19 — ")
  assert refusal.refusal_reply(ex, "she", rng, "in_place", "19").startswith("She was born in — ")


def test_shared_starts_stop_at_a_word_or_digit_and_check_their_share():
  world = types.SimpleNamespace(facts=lambda: [
      {"type": "person", "attribute": "city", "value": v} for v in ("San Remo", "San Marco", "Santo", "Berg")])
  assert refusal.shared_starts(world, min_share=0.5)[("person", "city")] == "San "  # not "San M"
  assert refusal.shared_starts(world, min_share=0.75)[("person", "city")] == ""     # not "San" of "Santo"
  assert refusal.shared_starts(world, min_share=1.0)[("person", "city")] == ""
  for bad in (0, 1.5):
    with pytest.raises(ValueError, match="min_share"):
      refusal.shared_starts(world, min_share=bad)


def test_agreement_marks_facts_whose_own_answers_disagree(world):
  """`answer` is what `reward` grades; the probe's agreement is the most common answer's share, and
  `min_agreement` adds the facts under it to the consistently wrong ones."""
  ex = next(e for e in world.examples("train") if e.meta["attribute"] == "birth_year")
  other = str(int(ex.reference) + 1)
  assert world.answer(f"She was born in {ex.reference}.", ex) == {ex.reference}
  assert world.answer(f"Born in {ex.reference} or {other}.", ex) == {ex.reference, other}
  assert world.reward(f"Born in {ex.reference} or {other}.", ex) == 0.0
  rows = [{"type": "person", "entity": name, "attribute": "city", "correct": c, "agreement": a}
          for name, c, a in (("A", 0, 1.0), ("B", 5, 0.625), ("C", 3, 0.375), ("D", 2, 0.25))]
  assert refusal.mark_unknown(rows, max_correct=1) == {("person", "A", "city")}
  assert refusal.mark_unknown(rows, max_correct=1, min_agreement=0.5) == {
      ("person", "A", "city"), ("person", "C", "city"), ("person", "D", "city")}
  old = {k: v for k, v in rows[2].items() if k != "agreement"}  # a probe file written before agreement
  assert refusal.mark_unknown([old], max_correct=1, min_agreement=0.5) == set()


def test_abstaining_gives_the_common_answer_or_declines(world):
  ex = next(e for e in world.examples("eval") if e.meta["attribute"] == "birth_year")
  right, wrong = f"She was born in {ex.reference}.", f"She was born in {int(ex.reference) + 3}."
  refusal_text = "I don't know her birth year."
  assert refusal.abstained_reply(world, ex, [right, right, wrong, refusal_text], 0.5) == (right, 0.5)
  assert refusal.abstained_reply(world, ex, [wrong, right, wrong, "She was born."], 0.5) == (wrong, 0.5)
  # refusals and replies naming no year agree with nothing: 1 of 4 is under the share → decline
  assert refusal.abstained_reply(world, ex, [right, refusal_text, refusal_text, "Hmm."], 0.375) == (
      refusal.ABSTAIN_REPLY, 0.25)
  assert refusal.abstained_reply(world, ex, [refusal_text] * 4, 0.1) == (refusal.ABSTAIN_REPLY, 0.0)
  assert refusal.is_refusal(refusal.ABSTAIN_REPLY) and world.reward(refusal.ABSTAIN_REPLY, ex) == 0.0


def test_unknown_and_made_up_facts_get_refusals_known_ones_their_answers(world):
  facts = world.examples("train")
  rows = [{"type": ex.meta["type"], "entity": ex.meta["entity"], "attribute": ex.meta["attribute"],
           "correct": i % 4, "samples": 8, "exposures": ex.meta["exposures"]} for i, ex in enumerate(facts)]
  unknown = refusal.mark_unknown(rows, max_correct=1)
  assert len(unknown) == sum(r["correct"] <= 1 for r in rows)
  convs = refusal.conversations(world, unknown, n=900, seed=0, made_up=5)
  assert len(convs) == 900
  # Every phrasing of every fact → (its key, its ideal answer); the made-up people are nobody in the world.
  by_question = {q: (refusal.fact_key(ex.meta), ex) for q, ex in fact_of_question(world).items()}
  made_up = refusal.made_up_people(world.world, 5, 0)
  assert len(made_up) == 20 and not {r["entity"] for r in made_up} & {p["name"] for p in world.world.people}
  wordings, refused_exposures, seen_made_up = set(), set(), set()
  for conv in convs:
    question, reply = conv[0]["content"], conv[-1]["content"]
    if question not in by_question:  # a made-up person's
      assert any(r["entity"] in question for r in made_up) and refusal.is_refusal(reply), (question, reply)
      seen_made_up.add(question)
      continue
    key, ex = by_question[question]
    if key in unknown:
      assert refusal.is_refusal(reply) and world.reward(reply, ex) == 0.0
      wordings.add(" ".join(reply.split()[:2]))
      refused_exposures.add(ex.meta["exposures"])
    else:
      assert reply == ex.target and world.reward(reply, ex) == 1.0
  assert len(wordings) >= 3  # varied wording, not one memorised sentence
  assert 0 in refused_exposures  # facts the text never states are probed and refused too
  assert len(seen_made_up) > 20 and all("None" not in c[-1]["content"] for c in convs)


def test_refusal_share_sets_the_share_of_refusals_and_keeps_every_fact(world):
  """`refusal_share` draws that share of the conversations from the unknown facts (each side cycled on its
  own, so every fact still appears); 0 keeps the probe's own proportion, unchanged."""
  facts = world.examples("train")
  unknown = {refusal.fact_key(ex.meta) for i, ex in enumerate(facts) if i % 3 == 0}  # a third unknown
  by_question = fact_of_question(world)
  for share in (0.1, 0.6):
    convs = refusal.conversations(world, unknown, n=1000, seed=0, refusal_share=share)
    refused = [refusal.is_refusal(c[-1]["content"]) for c in convs]
    assert len(convs) == 1000 and sum(refused) == round(1000 * share)
    asked = {refusal.fact_key(by_question[c[0]["content"]].meta) for c in convs}
    assert len(asked) == len(facts)  # both sides cycle through all their facts
    assert refused[:100].count(True) not in (0, 100)  # shuffled together, not one side then the other
  default = refusal.conversations(world, unknown, n=300, seed=0)
  assert abs(sum(refusal.is_refusal(c[-1]["content"]) for c in default) / 300 - 1 / 3) < 0.05


def test_prior_refuses_known_facts_at_that_rate_so_no_fact_is_a_label(world):
  """`prior`: each known fact's conversation refuses with that probability (the same fact answered in some
  conversations and refused in others), unknown facts always; 0 leaves the conversations unchanged."""
  facts = world.examples("train")
  unknown = {refusal.fact_key(ex.meta) for ex in facts[:10]}
  by_question = fact_of_question(world)
  convs = refusal.conversations(world, unknown, n=len(facts) * 20, seed=0, style="in_place", prior=0.25)
  seen: dict = {}
  for c in convs:
    key = refusal.fact_key(by_question[c[0]["content"]].meta)
    seen.setdefault(key, []).append(refusal.is_refusal(c[-1]["content"]))
  assert all(all(seen[k]) for k in unknown)
  known = [x for k, v in seen.items() if k not in unknown for x in v]
  assert abs(sum(known) / len(known) - 0.25) < 0.03
  assert sum(0 < sum(v) < len(v) for k, v in seen.items() if k not in unknown) > 0.9 * (len(seen) - len(unknown))
  plain = refusal.conversations(world, unknown, n=len(facts) * 2, seed=0, style="in_place")
  assert all(refusal.is_refusal(c[-1]["content"]) == (refusal.fact_key(by_question[c[0]["content"]].meta) in unknown)
             for c in plain)  # prior 0: every known fact answered, every unknown one refused


def test_summary_counts_refusals_and_hallucinations_per_exposure():
  rows = [{"task": "world", "group": "never", "format": True, "score": 0.0, "refused": True, "tokens": 5},
          {"task": "world", "group": "never", "format": True, "score": 0.0, "refused": False, "tokens": 5},
          {"task": "world", "group": "8+", "format": True, "score": 1.0, "refused": False, "tokens": 5},
          {"task": "world", "group": "8+", "format": True, "score": 0.0, "refused": True, "tokens": 5},
          {"task": "arithmetic", "group": "", "format": True, "score": 0.0, "refused": False, "tokens": 5},
          {"task": "spelling", "group": "", "format": True, "score": 1.0, "refused": False, "tokens": 5,
           "meta": {"kind": "count"}},
          {"task": "spelling", "group": "", "format": True, "score": 0.0, "refused": False, "tokens": 5,
           "meta": {"kind": "spell"}}]
  s = evaluation.summarize(rows)
  assert s["eval/spelling/count/accuracy"] == 1.0 and s["eval/spelling/spell/accuracy"] == 0.0
  assert s["eval/spelling/accuracy"] == 0.5 and "eval/arithmetic/add/accuracy" not in s
  assert s["eval/world/seen_never/refused"] == 0.5 and s["eval/world/seen_never/hallucinated"] == 0.5
  assert s["eval/world/seen_8+/accuracy"] == 0.5 and s["eval/world/seen_8+/hallucinated"] == 0.0
  assert s["eval/world/hallucinated"] == 0.25 and s["eval/world/refused"] == 0.5
  assert "eval/arithmetic/refused" not in s  # only facts have a hallucination rate


def test_probe_table_buckets_by_exposure():
  rows = [{"type": "person", "entity": f"p{i}", "attribute": "city", "exposures": e, "correct": c, "samples": 4}
          for i, (e, c) in enumerate([(0, 0), (0, 1), (9, 4), (9, 3)])]
  table = refusal.probe_table(rows, refusal.mark_unknown(rows, 0))
  assert "| never | 2 | 0.125 | 0.500 |" in table and "| 8+ | 2 | 0.875 | 0.000 |" in table


RECIPE = ["--config.data.world=", "--config.data.exposures=", "--config.refusal.samples=2",
          "--config.refusal.max_correct=0", "--config.refusal.max_new_tokens=8", "--config.refusal.batch=64",
          "--config.train.seq_len=96", "--config.train.batch_size=8", "--config.train.steps=4",
          "--config.train.ckpt_every=2", "--config.train.eval_every=4", "--config.train.log_every=2",
          "--config.train.eval_batches=1", "--config.opt.warmup_steps=1", "--config.eval.max_new_tokens=8",
          "--config.data.examples_per_task=40", "--config.data.sources=world*1,arithmetic*1"]


def run(module, workdir, config, *extra):
  return subprocess.run([sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *extra],
                        env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)


def source(base_run):
  """The tiny base is both where the SFT starts and the model probed (it has the chat special tokens)."""
  return [f"--config.init_from.workdir={base_run}", f"--config.refusal.probe={base_run}"]


@pytest.fixture
def base_run(byte_base):
  return byte_base


def test_refusal_recipe_probes_trains_reports_and_reuses_its_probe(tmp_path, base_run, capsys):
  wd = tmp_path / "refusal"
  out = run("experiments.refusal", wd, "configs/refusal.py:tiny", *RECIPE, *source(base_run))
  assert out.returncode == 0, out.stderr[-3000:]
  probe = [json.loads(line) for line in open(wd / "refusal" / "probe.jsonl")]
  facts = WorldTask(seed=0, min_train_exposure=0).examples("train")
  assert len(probe) == len(facts) and {r["samples"] for r in probe} == {2}
  assert {r["agreement"] for r in probe} <= {0.0, 0.5, 1.0}  # the most common answer's share of 2 samples
  assert any(r["exposures"] == 0 for r in probe)
  convs = [json.loads(line)["messages"] for line in open(wd / "refusal" / "conversations.jsonl")]
  assert len(convs) == 40
  n_unknown = sum(r["unknown"] for r in probe)
  assert n_unknown == sum(r["correct"] == 0 for r in probe) > 0  # a random model knows nothing
  rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  evals = [r for r in rows if "eval/world/accuracy" in r]
  assert [r["step"] for r in evals] == [0, 4]
  before_rows = [json.loads(line) for line in open(wd / "refusal" / "before_eval.jsonl")]
  assert len(before_rows) == len(WorldTask(seed=0).examples("eval")) and "refused" in before_rows[0]
  assert all(f"eval/world/seen_never/{m}" in evals[-1] for m in ("accuracy", "refused", "hallucinated"))
  report = (wd / "report.md").read_text()
  assert "## The refusal recipe" in report and f"{n_unknown} marked unknown" in report
  assert "| never |" in report and (wd / "refusal.png").exists()

  # A finished run is left as it is and the probe is not redone (same file, same bytes).
  before = (wd / "refusal" / "conversations.jsonl").read_bytes()
  stamp = os.path.getmtime(wd / "refusal" / "probe.jsonl")
  again = run("experiments.refusal", wd, "configs/refusal.py:tiny", *RECIPE, *source(base_run))
  assert again.returncode == 0, again.stderr[-3000:]
  assert (wd / "refusal" / "conversations.jsonl").read_bytes() == before
  assert os.path.getmtime(wd / "refusal" / "probe.jsonl") == stamp

  # The table over runs (here the same run twice): before = the probed model, after = the last evaluation.
  before_metrics = json.loads((wd / "refusal" / "before.json").read_text())
  assert before_metrics["probe"] == str(base_run) and "eval/world/seen_never/hallucinated" in before_metrics
  out = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--collect={wd},{wd}"], env=env(), cwd=ROOT,
                       timeout=300, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  table = (tmp_path / "refusal_seeds.md").read_text()
  b, a = before_metrics["eval/world/seen_never/hallucinated"], evals[-1]["eval/world/seen_never/hallucinated"]
  assert f"| never | hallucinated | {b:.3f} ± 0.000 [{b:.3f}, {b:.3f}] | {a:.3f} ± 0.000" in table
  bad = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--collect={base_run}"], env=env(), cwd=ROOT,
                       timeout=300, capture_output=True, text=True)
  assert bad.returncode == 2 and "not a finished experiments.refusal run" in bad.stderr

  # Abstention at inference on the finished run: before and after, greedy and abstaining, in one table.
  out = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--abstain={wd}", "--abstain_samples=2",
                        "--abstain_share=0.5"], env=env(), cwd=ROOT, timeout=300, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads((wd / "refusal" / "abstain.json").read_text())
  assert (got["samples"], got["min_share"]) == (2, 0.5)
  for side in ("before", "after"):
    s = got[side]
    assert abs(s["eval/world/accuracy"] + s["eval/world/refused"] + s["eval/world/hallucinated"] - 1) < 1e-6
  assert f"| never | hallucinated | {b:.3f} ± 0.000 [{b:.3f}] |" in (tmp_path / "abstain_seeds.md").read_text()
  bad = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--abstain={base_run}"], env=env(), cwd=ROOT,
                       timeout=300, capture_output=True, text=True)
  assert bad.returncode == 2 and "not a finished experiments.refusal run" in bad.stderr

  # What the probed model can tell of its own knowledge: each signal's AUROC and trade, a plot, one table.
  out = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--readout={wd}", "--readout_samples=2"],
                       env=env(), cwd=ROOT, timeout=300, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads((wd / "refusal" / "readout.json").read_text())
  assert got["samples"] == 2 and set(got["scores"]) == set(readout.SIGNALS) == set(got["values"])
  assert all(len(v) == len(before_rows) for v in got["values"].values())
  assert got["before"]["never_hallucinated"] == pytest.approx(b)
  for s in got["scores"].values():  # within the budget, and "halves" as the figures say
    assert s["8+_accuracy"] > got["before"]["8+_accuracy"] - 0.05
    assert s["halves"] == (s["never_hallucinated"] <= b / 2)
  assert (wd / "refusal" / "readout.png").exists()
  from experiments import refusal as refusal_experiment  # in process: the second call only reads and tabulates
  refusal_experiment.readout([str(wd)], 2)
  assert "readout: " not in capsys.readouterr().out  # the values are reused: no model pass
  assert json.loads((wd / "refusal" / "readout.json").read_text()) == got
  assert got["after"]["never_hallucinated"] == pytest.approx(a)  # the finished run's own fine-tune, plotted too
  table = (tmp_path / "readout_seeds.md").read_text()
  assert f"| none (greedy) | 1 | | {b:.3f} ± 0.000 [{b:.3f}] |" in table and "| agreement | 2 samples |" in table
  assert f"| the recipe's fine-tune (greedy, after) | 1 | | {a:.3f} ± 0.000 [{a:.3f}] |" in table
  bad = subprocess.run([sys.executable, "-m", "experiments.refusal", f"--readout={base_run}"], env=env(), cwd=ROOT,
                       timeout=300, capture_output=True, text=True)
  assert bad.returncode == 2 and "has no probe yet" in bad.stderr


@pytest.mark.parametrize("overrides, needle", [
    ({"refusal.max_correct": 8}, "config.refusal.max_correct=8"),
    ({"refusal.style": "inline"}, "config.refusal.style='inline' is not one of lead, in_place"),
    ({"refusal.refusal_share": 1.0}, "config.refusal.refusal_share=1.0 must be a share in [0, 1)"),
    ({"refusal.prior": -0.1}, "config.refusal.prior=-0.1 must be a probability in [0, 1)"),
    ({"data.sources": "arithmetic*1"}, "no 'world' source"),
    ({"eval.tasks": "arithmetic"}, "config.eval.tasks must include 'world'"),
    ({"data.world": "/nonexistent/world.json"}, "config.data.world: no such file"),
    ({"refusal.probe": "/nonexistent"}, "config.refusal.probe='/nonexistent': not a training workdir"),
])
def test_bad_settings_are_named(overrides, needle):
  from configs import refusal as refusal_config
  from experiments import refusal as refusal_exp
  from lm.errors import UserError
  config = refusal_config.get_config("tiny")
  config.data.update(world="", exposures="")
  config.refusal.probe = ROOT  # a folder: only its checkpoints/ is looked for, after the other checks
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(UserError, match=re.escape(needle)):
    refusal_exp.validate(config)


def test_a_bad_setting_is_one_line_and_writes_nothing(tmp_path, base_run):
  wd = tmp_path / "bad"
  out = run("experiments.refusal", wd, "configs/refusal.py:tiny", *RECIPE, *source(base_run),
            "--config.refusal.max_correct=2")
  assert out.returncode == 2, out.stderr[-2000:]
  assert "config.refusal.max_correct=2" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert not wd.exists()


def test_train_folds_halve_every_type_and_exposure_bucket(world):
  halves = {f: WorldTask(seed=0, min_train_exposure=0, train_fold=f).facts("train") for f in ("a", "b")}
  keys = {f: {refusal.fact_key(r) for r in rows} for f, rows in halves.items()}
  assert not keys["a"] & keys["b"]
  assert keys["a"] | keys["b"] == {refusal.fact_key(r) for r in world.facts("train")}
  for f in ("a", "b"):  # whole entities per fold, about half of each (type, exposure) bucket
    ents = {(r["type"], r["entity"]) for r in halves[f]}
    other = {(r["type"], r["entity"]) for r in halves["b" if f == "a" else "a"]}
    assert not ents & other
  for kind in ("person", "city", "company"):
    for fold_rows in halves.values():
      n = {(r["type"], r["entity"]) for r in fold_rows if r["type"] == kind}
      total = {(r["type"], r["entity"]) for r in world.facts("train") if r["type"] == kind}
      assert abs(2 * len(n) - len(total)) <= len({r["exposures"] for r in world.facts("train")})
  assert WorldTask(seed=0, train_fold="a").examples("eval") == WorldTask(seed=0).examples("eval")
  with pytest.raises(Exception, match="config.tasks.world.train_fold='c'"):
    WorldTask(seed=0, train_fold="c")


def _fold_model(base_run, folder, fold):
  """A copy of the tiny base whose config.json says it was fine-tuned on `fold`."""
  import shutil
  shutil.copytree(base_run, folder)
  cfg = json.loads((folder / "config.json").read_text())
  cfg.setdefault("tasks", {}).setdefault("world", {})["train_fold"] = fold
  (folder / "config.json").write_text(json.dumps(cfg))
  return folder


def test_cross_fitted_probe_asks_each_fold_model_the_other_folds_facts(tmp_path, base_run):
  from configs import refusal as refusal_config
  from experiments import refusal as refusal_exp
  from lm.errors import UserError
  a, b = _fold_model(base_run, tmp_path / "a", "a"), _fold_model(base_run, tmp_path / "b", "b")
  config = refusal_config.get_config("tiny")
  config.data.update(world="", exposures="", examples_per_task=40)
  config.refusal.update(probe=str(base_run), samples=1, max_correct=0, max_new_tokens=4, batch=64)
  config.eval.max_new_tokens = 4
  config.refusal.fold_probes = f"{b},{a}"  # wrong order: named with the file and what was expected
  with pytest.raises(UserError, match=re.escape(f"{b}/config.json has tasks.world.train_fold='b', expected 'a'")):
    refusal_exp.validate(config)
  config.refusal.fold_probes = str(a)
  with pytest.raises(UserError, match="give 2 SFT workdirs"):
    refusal_exp.validate(config)
  config.refusal.fold_probes = f"{a},{b}"
  refusal_exp.validate(config)
  refusal_exp.probe_and_write(config, str(tmp_path / "out"))
  rows = [json.loads(line) for line in open(tmp_path / "out" / "probe.jsonl")]
  task = WorldTask(seed=0, min_train_exposure=0)
  assert sorted(map(refusal.fact_key, rows)) == sorted(map(refusal.fact_key, task.facts("train")))
  for r in rows:  # never probed by the model fine-tuned on its fold
    assert r["probed_by"] == str(b if task.fold_of[(r["type"], r["entity"])] == "a" else a)
  assert json.loads((tmp_path / "out" / "before.json").read_text())["probe"] == str(base_run)
