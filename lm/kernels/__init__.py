"""Hand-written kernels that XLA calls through its FFI (compiled on first use)."""
