"""Timing code behind `python -m experiments.bench`: the train step and decoding, each beside a peer."""
