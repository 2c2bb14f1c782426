"""Tokenizers: one small interface, byte-level and sentencepiece BPE, and loading by name.

Every tokenizer has the same surface: `encode(text) -> list[int]`,
`decode(ids) -> str`, `vocab_size`, and ids for the special tokens
(`bos_id`, `eos_id`, `pad_id`, plus `special_ids` by name). A tokenizer is saved
next to token shards and inside every checkpoint as one file, so that a run can
always be decoded and a vocabulary mismatch is caught (`save` / `load_tokenizer`).

`SentencePieceTokenizer` is a BPE model trained with `train_sentencepiece` on
cleaned text: identity normalisation and byte fallback make it lossless on any
UTF-8 text, digits are split one per token, and the special tokens are
sentencepiece *control* symbols, which encoding text can never produce.

`HFTokenizer` is an imported Hugging Face folder's tokenizer (Llama 3.x, Qwen,
SmolLM2, ...): tokenizer.json plus the special tokens and chat template its
other files name.
"""
from __future__ import annotations

import io
import json
import os
from typing import Iterable, Iterator, Protocol, Sequence

from lm.errors import MissingFile, UserError

SPECIAL_TOKENS = (
    "<|bos|>", "<|eos|>", "<|pad|>",
    "<|im_start|>", "<|im_sep|>", "<|im_end|>",
    "<|python_start|>", "<|python_end|>",
    "<|output_start|>", "<|output_end|>",
    "<|search_start|>", "<|search_end|>",
)


class Tokenizer(Protocol):
  vocab_size: int
  bos_id: int
  eos_id: int
  pad_id: int
  special_ids: dict[str, int]

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def save(self, path: str) -> None: ...


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then the special tokens; lossless on any text.

  Special tokens are ids ≥ 256, which no byte can produce, so they are atomic.
  `encode` never emits them from text: a literal "<|bos|>" in a document stays
  eight bytes.
  """

  kind = "byte"

  def __init__(self):
    self.special_ids = {t: 256 + i for i, t in enumerate(SPECIAL_TOKENS)}
    self.vocab_size = 256 + len(SPECIAL_TOKENS)
    self.bos_id = self.special_ids["<|bos|>"]
    self.eos_id = self.special_ids["<|eos|>"]
    self.pad_id = self.special_ids["<|pad|>"]

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    inverse = {v: k for k, v in self.special_ids.items()}
    out, buf = [], bytearray()
    for i in ids:
      i = int(i)
      if i < 256:
        buf.append(i)
        continue
      out.append(buf.decode("utf-8", errors="replace"))
      buf = bytearray()
      out.append(inverse.get(i, ""))
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"kind": "byte", "vocab_size": self.vocab_size}, f)


# Sentencepiece turns " " into this meta symbol and back, so a literal one in
# text would decode as a space; it is encoded as its three UTF-8 bytes instead.
_SP_SPACE = "\u2581"


class SentencePieceTokenizer:
  """A trained sentencepiece BPE model with the project's special tokens.

  Ids: 0 is <unk> (unused: byte fallback covers every byte), then the special
  tokens in `SPECIAL_TOKENS` order, then 256 byte pieces, then merges.
  """

  kind = "sentencepiece"
  file_name = "tokenizer.model"

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self.sp.get_piece_size()
    self.special_ids = {t: self.sp.piece_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in self.special_ids.items() if not self.sp.is_control(i)]
    if missing:
      raise UserError(f"tokenizer: sentencepiece model lacks control symbols {missing}; "
                       f"train it with experiments.train_tokenizer")
    self.bos_id = self.special_ids["<|bos|>"]
    self.eos_id = self.special_ids["<|eos|>"]
    self.pad_id = self.special_ids["<|pad|>"]
    self._space_bytes = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _SP_SPACE.encode("utf-8")]
    self._special_pieces = {i: t for t, i in self.special_ids.items()}

  @classmethod
  def from_file(cls, path: str) -> "SentencePieceTokenizer":
    with open(path, "rb") as f:
      return cls(f.read())

  def encode(self, text: str) -> list[int]:
    if _SP_SPACE not in text:
      return self.sp.encode(text)
    ids: list[int] = []
    for k, part in enumerate(text.split(_SP_SPACE)):
      if k:
        ids.extend(self._space_bytes)
      ids.extend(self.sp.encode(part))
    return ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Sequence[int]) -> str:
    """Special ids decode to their own text (sentencepiece would drop control symbols)."""
    out, run = [], []
    for i in ids:
      i = int(i)
      if i in self._special_pieces:
        out.append(self.sp.decode(run))
        out.append(self._special_pieces[i])
        run = []
      else:
        run.append(i)
    out.append(self.sp.decode(run))
    return "".join(out)

  def save(self, path: str) -> None:
    with open(path, "wb") as f:
      f.write(self.model_proto)


def _training_lines(texts: Iterable[str], max_chars: int) -> Iterator[str]:
  """Sentencepiece trains on lines; long lines are cut so none is silently skipped."""
  for text in texts:
    for line in text.split("\n"):
      for start in range(0, len(line), max_chars):
        piece = line[start:start + max_chars]
        if piece.strip():
          yield piece


def train_sentencepiece(texts: Iterable[str], vocab_size: int, *, max_lines: int = 2_000_000,
                        num_threads: int = 2, max_line_chars: int = 4096) -> SentencePieceTokenizer:
  """Trains a BPE model on `texts` (documents); returns it in memory (`save` writes it)."""
  import sentencepiece as spm
  floor = 1 + len(SPECIAL_TOKENS) + 256
  if vocab_size <= floor:
    raise UserError(f"tokenizer.vocab_size={vocab_size} must exceed {floor} "
                     f"(<unk> + {len(SPECIAL_TOKENS)} special tokens + 256 bytes)")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_lines(texts, max_line_chars),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        # Lossless round trips: no NFKC, no whitespace folding, no invented leading space.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        control_symbols=list(SPECIAL_TOKENS),
        character_coverage=0.9995,
        input_sentence_size=max_lines,
        shuffle_input_sentence=True,
        max_sentence_length=max_line_chars * 4,  # bytes: 4 per character at most
        num_threads=num_threads,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise UserError(f"tokenizer: sentencepiece training failed ({e}); "
                     f"a smaller tokenizer.vocab_size or more text usually fixes it") from None
  return SentencePieceTokenizer(model.getvalue())


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else path
    raise UserError(f"tokenizer: {where}: not valid JSON; restore the file from the model's release") from None
  if not isinstance(value, dict):
    raise UserError(f"tokenizer: {path}: a JSON {type(value).__name__}, expected an object")
  return value


# The special tokens transformers hands a chat template by name (`{{ bos_token }}`).
_ROLES = ("bos", "eos", "pad", "unk")


class HFTokenizer:
  """A Hugging Face folder's tokenizer behind our surface (the `tokenizers` package).

  It reads what transformers reads beside tokenizer.json. bos/eos/pad/unk come
  from tokenizer_config.json ("bos_token": a string or {"content": ...}; an
  explicit null means none: Qwen has no BOS), else special_tokens_map.json, else
  config.json's *_token_id. A missing pad falls back to eos (padding is masked
  out), then 0. `special_ids` holds this project's conversation tokens where the
  vocabulary has them (a model trained here); `added_special_ids` every special
  token of the vocabulary by its text (<|begin_of_text|>, <|eot_id|>,
  <|im_start|>, <|im_end|>, ...): the chat template writes those, and
  `lm/chat_template.py` finds the end-of-turn token among them. The template
  (tokenizer_config.json "chat_template", or chat_template.jinja) is
  `chat_template`; it travels with the tokenizer into checkpoints and exports.

  `encode(text)` never turns text into a special token (a document or a message
  spelling "<|im_end|>" stays text), as transformers' `encode(text,
  add_special_tokens=False, split_special_tokens=True)`; `encode_offsets(text,
  special=True)` parses them, for text a chat template wrote. `decode` keeps
  special tokens, as transformers' `decode`. Truncation and padding settings in
  tokenizer.json are ignored: callers cut and pad.
  """

  kind = "hf"
  file_name = "hf_tokenizer.json"

  def __init__(self, folder: str | None = None, *, record: dict | None = None):
    from tokenizers import Tokenizer
    if record is not None:  # saved by `save` (inside a checkpoint)
      self._tok = Tokenizer.from_str(record["tokenizer_json"])
      self.bos_id, self.eos_id, self.pad_id = record["bos_id"], record["eos_id"], record["pad_id"]
      self.special_strings = dict(record.get("special_strings") or {})
      self.chat_template = record.get("chat_template")
    else:
      path = os.path.join(folder, "tokenizer.json")
      if not os.path.exists(path):
        raise MissingFile(f"tokenizer: {path} not found (a Hugging Face folder has tokenizer.json)")
      self._tok = Tokenizer.from_file(path)
      self._read_folder(folder)
    self.vocab_size = self._tok.get_vocab_size()
    added = self._tok.get_added_tokens_decoder()
    self.added_ids = {t.content: i for i, t in added.items()}
    self.added_special_ids = {t.content: i for i, t in added.items() if t.special}
    self.special_ids = {t: self.added_special_ids[t] for t in SPECIAL_TOKENS if t in self.added_special_ids}
    self._parse, self._plain = self._encoder(special=True), self._encoder(special=False)

  def _read_folder(self, folder: str) -> None:
    files = [os.path.join(folder, n) for n in ("tokenizer_config.json", "special_tokens_map.json")]
    tok_cfg, tok_map = (_read_json(f) for f in files)
    model_cfg = _read_json(os.path.join(folder, "config.json"))
    ids, self.special_strings = {}, {}
    for role in _ROLES:
      key = f"{role}_token"
      where = next(((f, d) for f, d in zip(files, (tok_cfg, tok_map)) if key in d), None)
      if where:
        value = where[1][key]
        text = value.get("content") if isinstance(value, dict) else value
        ids[role] = None if text is None else self._tok.token_to_id(text)
        if text is not None and ids[role] is None:
          raise UserError(f"tokenizer: {where[0]}: {key} {text!r} is not in tokenizer.json's vocabulary")
      else:
        i = model_cfg.get(f"{role}_token_id")
        ids[role] = i[0] if isinstance(i, list) else i
        text = None if ids[role] is None else self._tok.id_to_token(ids[role])
      if text is not None:
        self.special_strings[key] = text
    self.bos_id, self.eos_id = ids["bos"], ids["eos"]
    self.pad_id = next((i for i in (ids["pad"], ids["eos"]) if i is not None), 0)
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: the default one renders conversations
      template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(jinja):  # transformers ≥ 4.43 saves the template on its own
      with open(jinja, encoding="utf-8") as f:
        template = f.read()
    self.chat_template = template

  def _encoder(self, special: bool):
    """A copy that parses special tokens in text or not, without truncation, padding or the
    post-processor (which adds nothing without add_special_tokens, but trims offsets)."""
    from tokenizers import Tokenizer
    spec = json.loads(self._tok.to_str())
    spec.update(truncation=None, padding=None, post_processor=None)
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.encode_special_tokens = not special
    return tok

  def encode(self, text: str) -> list[int]:
    return self._plain.encode(text, add_special_tokens=False).ids

  def encode_offsets(self, text: str, special: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character span of each id); `special`: text spelling a special token becomes it."""
    enc = (self._parse if special else self._plain).encode(text, add_special_tokens=False)
    return enc.ids, enc.offsets

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"kind": "hf", "tokenizer_json": self._tok.to_str(), "bos_id": self.bos_id,
                 "eos_id": self.eos_id, "pad_id": self.pad_id, "special_strings": self.special_strings,
                 "chat_template": self.chat_template}, f)

  def save_pretrained(self, folder: str) -> None:
    """tokenizer.json + tokenizer_config.json that transformers' AutoTokenizer loads."""
    os.makedirs(folder, exist_ok=True)
    self._tok.save(os.path.join(folder, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              **{f"{r}_token": self.special_strings.get(f"{r}_token") for r in _ROLES}}
    if self.chat_template is not None:
      config["chat_template"] = self.chat_template
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, ensure_ascii=False)


TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FILES = (SentencePieceTokenizer.file_name, TOKENIZER_FILE, HFTokenizer.file_name)


def load_tokenizer(spec: str) -> Tokenizer:
  """`spec` is 'byte' or a path to a saved tokenizer file (or a folder holding one)."""
  if spec == "byte":
    return ByteTokenizer()
  path = spec
  if os.path.isdir(spec):
    found = [os.path.join(spec, n) for n in TOKENIZER_FILES if os.path.exists(os.path.join(spec, n))]
    path = found[0] if found else os.path.join(spec, TOKENIZER_FILE)
  if not os.path.exists(path):
    raise MissingFile(f"tokenizer: no such file {path!r} (use 'byte' or a saved tokenizer)")
  if path.endswith(".model"):
    return SentencePieceTokenizer.from_file(path)
  if path.endswith(".json"):
    try:
      with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else path
      raise UserError(f"tokenizer: {where}: not a saved tokenizer (invalid JSON); use 'byte' or a file "
                      f"written by experiments.train_tokenizer") from None
    if not isinstance(meta, dict):
      raise UserError(f"tokenizer: {path}: not a saved tokenizer (a JSON {type(meta).__name__})")
    if meta.get("kind") == "byte":
      return ByteTokenizer()
    if meta.get("kind") == "hf":
      return HFTokenizer(record=meta)
    raise UserError(f"tokenizer: {path!r} has unknown kind {meta.get('kind')!r}")
  raise UserError(f"tokenizer: cannot read {path!r}: expected a tokenizer .json or .model file")
