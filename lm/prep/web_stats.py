"""What the web pipeline did: per-step counts, scores against labels, report files.

`step_table(work)` reads datatrove's stats.json of each stage into rows
{step, in, kept, dropped, reasons}; consecutive rows chain (a step's kept is
the next step's in) and documents read = kept at the end + all dropped.
`score_labels(work, labels)` traces every labelled page of the synthetic crawl
to its fate (kept, or the step that removed it) and gives each filter's
precision (what it removed should have gone) and recall (what it should remove
is gone). `write_report` puts both in web_stats.json, web_report.md and
web_filters.png.
"""
from __future__ import annotations

import glob
import gzip
import json
import os

from lm.errors import MissingFile
from lm.prep import web

# Steps in datatrove's stats order, per stage; None marks steps that drop nothing.
STAGE_STEPS = {
    "filter": ("read", "url", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", None),
    "output": (None, "minhash", None),
}
# Which page kinds each filter exists to remove (the synthetic crawl's labels).
TARGETS = {"url": ("blocklisted",), "extract": ("boilerplate",), "language": ("non_english",),
           "gopher_repetition": ("low_quality",), "gopher_quality": ("low_quality",), "c4": ("low_quality",),
           "fineweb": ("low_quality",), "minhash": ("exact_duplicate", "near_duplicate")}


def _stage_stats(work: str, stage: str) -> list[dict]:
  path = os.path.join(web.path(work, "logs"), stage, "stats.json")
  if not os.path.exists(path):
    raise MissingFile(f"web: {path!r} missing; the {stage!r} stage did not finish")
  with open(path) as f:
    return json.load(f)


def step_table(work: str, stages=tuple(STAGE_STEPS)) -> list[dict]:
  """Rows for the stages that ran; steps of stages left out (nothing reached them) get all-zero rows."""
  rows = []
  for stage, names in STAGE_STEPS.items():
    if stage not in stages:
      rows += [{"step": n, "in": 0, "kept": 0, "dropped": 0, "reasons": {}} for n in names if n is not None]
      continue
    for name, st in zip(names, _stage_stats(work, stage)):
      s = st["stats"]
      if name == "read":
        n = s.get("documents", {}).get("total", 0)
        rows.append({"step": "read", "in": n, "kept": n, "dropped": 0, "reasons": {}})
      elif name is not None:
        total = s.get("total", 0)
        kept = s.get("forwarded", 0)
        reasons = {k.removeprefix("dropped_"): v for k, v in s.items() if k.startswith("dropped_")}
        rows.append({"step": name, "in": total, "kept": kept, "dropped": total - kept, "reasons": reasons})
  return rows


def check_table(rows: list[dict]) -> None:
  """Counts must add up: each step's in = kept + dropped, and steps chain."""
  for prev, row in zip(rows, rows[1:]):
    if row["in"] != prev["kept"]:
      raise AssertionError(f"web stats: {row['step']} got {row['in']} documents, {prev['step']} kept {prev['kept']}")
  total_dropped = sum(r["dropped"] for r in rows)
  if rows[0]["in"] != rows[-1]["kept"] + total_dropped:
    raise AssertionError(f"web stats: read {rows[0]['in']} ≠ kept {rows[-1]['kept']} + dropped {total_dropped}")


def top_filter(rows: list[dict]) -> dict | None:
  """The step that dropped the most documents (None when nothing was dropped)."""
  best = max(rows[1:], key=lambda r: r["dropped"], default=None)
  return best if best and best["dropped"] else None


def _read_jsonl_folder(folder: str) -> list[dict]:
  docs = []
  for path in sorted(glob.glob(os.path.join(folder, "*.jsonl.gz"))):
    with gzip.open(path, "rt", encoding="utf-8") as f:
      docs += [json.loads(line) for line in f]
  return docs


def kept_documents(work: str) -> list[dict]:
  return _read_jsonl_folder(web.path(work, "jsonl"))


def fates(work: str) -> tuple[dict[str, str], dict[str, str]]:
  """({url: step that removed it, or 'kept'}, {url: kept text}); unseen urls were not read or not extracted."""
  fate, text = {}, {}
  for step in web.FILTER_STEPS:
    for d in _read_jsonl_folder(os.path.join(web.path(work, "removed"), step)):
      fate[d["metadata"]["url"]] = step
  for d in kept_documents(work):
    fate[d["metadata"]["url"]] = "kept"
    text[d["metadata"]["url"]] = d["text"]
  return fate, text


def score_labels(work: str, labels: dict[str, dict]) -> dict:
  fate, text = fates(work)

  def where(url: str) -> str:
    if url in fate:
      return fate[url]
    return "read" if labels[url]["kind"] == "non_html" else "extract"

  by_kind: dict[str, dict[str, int]] = {}
  for url, lab in labels.items():
    counts = by_kind.setdefault(lab["kind"], {})
    counts[where(url)] = counts.get(where(url), 0) + 1
  filters = {}
  for step, kinds in TARGETS.items():
    removed = [u for u in labels if where(u) == step]
    should = [u for u in labels if labels[u]["kind"] in kinds]
    filters[step] = {
        "removed": len(removed),
        "precision": sum(labels[u]["expect"] == "drop" for u in removed) / len(removed) if removed else None,
        "target_pages": len(should),
        "recall_any_step": sum(where(u) != "kept" for u in should) / len(should) if should else None,
        "recall_this_step": sum(where(u) == step for u in should) / len(should) if should else None,
    }
  share_gone = lambda kinds: _share([where(u) != "kept" for u in labels if labels[u]["kind"] in kinds])
  pii_leaks = sum(s in text.get(u, "") for u, lab in labels.items() for s in lab["pii"])
  return {
      "by_kind": by_kind,
      "filters": filters,
      "near_duplicates_removed": share_gone(("near_duplicate", "exact_duplicate")),
      "non_english_removed": share_gone(("non_english",)),
      "blocklisted_removed": share_gone(("blocklisted",)),
      "low_quality_removed": share_gone(("low_quality",)),
      "pii_in_kept_text": pii_leaks,
      "encyclopedia_kept": _share([where(u) == "kept" for u in labels if labels[u]["kind"] in ("person", "city")]),
      "good_pages_kept": _share([where(u) == "kept" for u in labels if labels[u]["expect"] == "keep"]),
      "junk_kept": sum(where(u) == "kept" for u in labels if labels[u]["expect"] == "drop"),
  }


def _share(flags: list[bool]) -> float | None:
  return sum(flags) / len(flags) if flags else None


def _fmt(x) -> str:
  return "–" if x is None else f"{x:.1%}" if isinstance(x, float) else str(x)


def markdown(rows: list[dict], scores: dict | None, throughput: dict) -> str:
  lines = ["# Web pipeline", "",
           f"{rows[0]['in']} documents read, {rows[-1]['kept']} kept, "
           f"{sum(r['dropped'] for r in rows)} dropped; {throughput['docs_per_s']:.1f} documents/s "
           f"({throughput['seconds']:.1f} s, {throughput['workers']} workers, executor {throughput['executor']}).", "",
           "| step | in | kept | dropped | why |", "|---|---:|---:|---:|---|"]
  for r in rows:
    why = ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]))
    lines.append(f"| {r['step']} | {r['in']} | {r['kept']} | {r['dropped']} | {why} |")
  if scores:
    lines += ["", "## Against the synthetic crawl's labels", "",
              "| filter | removed | precision | target pages | recall (any step) | recall (this step) |",
              "|---|---:|---:|---:|---:|---:|"]
    for step, f in scores["filters"].items():
      lines.append(f"| {step} | {f['removed']} | {_fmt(f['precision'])} | {f['target_pages']} | "
                   f"{_fmt(f['recall_any_step'])} | {_fmt(f['recall_this_step'])} |")
    lines += [""] + [f"- {k.replace('_', ' ')}: {_fmt(scores[k])}" for k in (
        "near_duplicates_removed", "non_english_removed", "blocklisted_removed", "low_quality_removed",
        "pii_in_kept_text", "encyclopedia_kept", "good_pages_kept", "junk_kept")]
    lines += ["", "| page kind | fate |", "|---|---|"]
    for kind, counts in sorted(scores["by_kind"].items()):
      lines.append(f"| {kind} | " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + " |")
  return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  steps = [r for r in rows if r["step"] != "read"]
  fig, ax = plt.subplots(figsize=(8, 3.5))
  ax.bar([r["step"] for r in steps], [r["dropped"] for r in steps], color="#c0504d", label="dropped")
  ax.bar(["kept"], [rows[-1]["kept"]], color="#4f81bd", label="kept")
  ax.set_ylabel("documents")
  ax.set_title(f"Web pipeline: {rows[0]['in']} documents read")
  ax.legend()
  plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(workdir: str, rows: list[dict], scores: dict | None, throughput: dict) -> str:
  with open(os.path.join(workdir, "web_stats.json"), "w") as f:
    json.dump({"steps": rows, "labels": scores, "throughput": throughput}, f, indent=1)
  text = markdown(rows, scores, throughput)
  with open(os.path.join(workdir, "web_report.md"), "w") as f:
    f.write(text)
  bar_chart(rows, os.path.join(workdir, "web_filters.png"))
  return text
