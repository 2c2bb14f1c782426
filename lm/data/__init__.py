"""Data: corpora, tokenizers' output as token shards, and Grain pipelines."""
