"""Experiment entry points: python -m experiments.<name> --config=configs/<file>.py:<arg> ..."""
import sys

if sys.argv[:1] == ["-m"]:  # this package is being imported to run one of its modules as __main__
  from lm import host_malloc
  host_malloc.reexec_if_needed()
