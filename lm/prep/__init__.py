"""Offline corpus processing: web pipeline, statistics, synthetic world, tokenization into shards."""
