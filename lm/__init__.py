"""lm: a JAX library for the whole life of a chat model (data → pretraining → SFT → RL)."""
