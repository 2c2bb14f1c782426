"""Experiment entry points: python -m experiments.<name> --config=configs/<file>.py:<arg> ...

Importing the package registers the optional CPU implementations (`lm.cpu`; a
no-op with LM_CPU_SPEEDUPS=0, and they defer to the core on accelerators).
"""
from lm import cpu as _cpu

_cpu.register()
