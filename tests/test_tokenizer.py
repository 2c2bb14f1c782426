"""SentencePiece tokenizer: lossless on real data, atomic special tokens, saved and reloaded."""
import gzip
import json

import pytest

from lm import tokenizer as tokenizer_lib
from lm.data import corpus
from lm.prep import synthetic
from tests.conftest import shared_file as _shared

# The embedded corpus (pydoc topics, stdlib docstrings): every 4th document is held out.
EMBEDDED = list(corpus.default_documents())


def _sharegpt_texts():
  with open(_shared("sharegpt-dummy-conversations.json")) as f:
    rows = json.load(f)
  return [t["value"] for r in rows for t in r["conversations"]]


def _gsm8k_texts():
  with open(_shared("gsm8k-train.jsonl")) as f:
    return [json.loads(line)["question"] + "\n" + json.loads(line)["answer"] for line in f]


@pytest.fixture(scope="module")
def tok():
  """Trained on what every checkout has: the synthetic world's pages and the embedded corpus."""
  docs = list(synthetic.clean_documents()) + [d[:20_000] for i, d in enumerate(EMBEDDED) if i % 4]
  return tokenizer_lib.train_sentencepiece(docs, 1024)


EDGE_CASES = [
    "", " ", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\n", "emoji 🎉👩‍👩‍👧 and CJK 日本語",
    "literal meta symbol ▁ and ▁▁", "<|bos|> literal <|im_end|> text", "def f(x):\n    return {'a': [1, 2]}\n",
    "digits 1234567890 3.14159", "\u200b zero width \ufeff bom", "combining é vs e\u0301",
]


def test_round_trip_edge_cases(tok):
  for text in EDGE_CASES:
    assert tok.decode(tok.encode(text)) == text, repr(text)


def test_round_trip_real_data(tok):
  texts = _gsm8k_texts() + _sharegpt_texts()
  with gzip.open(_shared("hh-rlhf-harmless-base-test.jsonl.gz"), "rt") as f:
    texts += [json.loads(line)["chosen"] for line in f][:500]
  bad = [t for t in texts if tok.decode(tok.encode(t)) != t]
  assert not bad, f"{len(bad)} of {len(texts)} documents do not round-trip, e.g. {bad[0][:200]!r}"


def test_special_tokens_atomic_and_unproducible(tok):
  assert len(tok.special_ids) == len(tokenizer_lib.SPECIAL_TOKENS)
  assert len(set(tok.special_ids.values())) == len(tokenizer_lib.SPECIAL_TOKENS)
  specials = set(tok.special_ids.values())
  for name, i in tok.special_ids.items():
    assert tok.decode([i]) == name
    # The literal text of a special token is ordinary text: several non-special ids.
    ids = tok.encode(name)
    assert len(ids) > 1 and not specials & set(ids)
  convo = [tok.special_ids["<|im_start|>"]] + tok.encode("user") + [tok.special_ids["<|im_sep|>"]]
  assert tok.decode(convo) == "<|im_start|>user<|im_sep|>"
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == tuple(tok.special_ids[t] for t in ("<|bos|>", "<|eos|>", "<|pad|>"))


def test_digits_split(tok):
  ids = tok.encode("1234567")
  assert len(ids) == 7


def test_save_and_load(tok, tmp_path):
  tok.save(str(tmp_path / tok.file_name))
  for spec in (str(tmp_path / tok.file_name), str(tmp_path)):
    again = tokenizer_lib.load_tokenizer(spec)
    assert isinstance(again, tokenizer_lib.SentencePieceTokenizer)
    assert again.vocab_size == tok.vocab_size and again.special_ids == tok.special_ids
    assert again.encode("Hello ▁ world 42") == tok.encode("Hello ▁ world 42")
  assert isinstance(tokenizer_lib.load_tokenizer("byte"), tokenizer_lib.ByteTokenizer)


def test_vocab_too_small_is_a_clear_error():
  with pytest.raises(ValueError, match="tokenizer.vocab_size"):
    tokenizer_lib.train_sentencepiece(["some text"], 200)


def test_compression_beats_bytes(tok):
  held_out = "\n\n".join(d for i, d in enumerate(EMBEDDED) if i % 4 == 0)[:200_000]
  synth = "\n\n".join(synthetic.clean_documents(seed=1))
  for text in (held_out, synth):
    assert len(text.encode()) / len(tok.encode(text)) > 2.0


def test_compression_on_unseen_real_text(tok):
  shakespeare = open(_shared("tinyshakespeare.txt")).read()[-100_000:]  # another domain entirely
  assert len(shakespeare.encode()) / len(tok.encode(shakespeare)) > 1.8
