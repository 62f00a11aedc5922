"""tests/support/require.py: a missing dependency skips a test on a developer's machine and fails
it under CI=true; and no test skips for a missing import on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.require import require, require_module

TESTS = Path(__file__).resolve().parents[1]


def test_a_missing_dependency_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    require(True, "never said")
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        require(None, "no frobnicator")
    with pytest.raises(pytest.skip.Exception, match="no module"):
        require_module("sentinel_exp_no_such_module", "no module")
    assert require_module("json", "never said").dumps([]) == "[]"


def test_a_missing_dependency_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true and no frobnicator: \.ci/run provides it"):
        require(False, "no frobnicator")
    with pytest.raises(pytest.fail.Exception, match="CI=true and no module"):
        require_module("sentinel_exp_no_such_module", "no module")


def test_every_skip_for_a_missing_import_goes_through_require() -> None:
    offenders = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if "importorskip(" in path.read_text(encoding="utf-8") and path.name != Path(__file__).name
    ]
    assert offenders == []
