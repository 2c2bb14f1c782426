"""The rules the test suite itself keeps, so that a green run means what it says."""
import warnings

import pytest

from tests import conftest


def test_deprecations_from_project_code_are_errors():
  with pytest.raises(DeprecationWarning):
    warnings.warn_explicit("old API", DeprecationWarning, "lm/model.py", 1, module="lm.model")
  with pytest.raises(DeprecationWarning):
    warnings.warn_explicit("old API", DeprecationWarning, "experiments/sft.py", 1, module="experiments.sft")
  with pytest.warns(DeprecationWarning):  # a dependency's own deprecation is shown, not fatal
    warnings.warn_explicit("old API", DeprecationWarning, "x/y.py", 1, module="lmstudio.y")


def test_missing_shared_data_skips_locally_and_fails_in_ci(monkeypatch):
  monkeypatch.setattr(conftest, "REQUIRE_SHARED_DATA", False)
  with pytest.raises(pytest.skip.Exception, match="needs ../shared/data/no-such-file"):
    conftest.shared_file("no-such-file")
  monkeypatch.setattr(conftest, "REQUIRE_SHARED_DATA", True)
  with pytest.raises(pytest.fail.Exception, match="no-such-file.*LM_REQUIRE_SHARED_DATA=1"):
    conftest.shared_file("no-such-file")
