"""The `timing` tests, and only they, get one rerun (tests/conftest.py): a run of pytest on two
tests that fail on their first call, one marked `timing`, with the project's conftest as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

FLIPPING = """
import pathlib
import pytest

def first_call(name):
    mark = pathlib.Path(name)
    seen = mark.exists()
    mark.write_text("x")
    return not seen

@pytest.mark.timing
def test_timing_fails_once():
    assert not first_call("timing")

@pytest.mark.timing
def test_timing_fails_twice():
    assert False

def test_other_fails_once():
    assert not first_call("other")
"""


def test_a_timing_test_is_rerun_once_and_no_other_is(tmp_path: Path) -> None:
    (tmp_path / "test_flipping.py").write_text(FLIPPING, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-o", "markers=timing: t",
         "-rA", "test_flipping.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = done.stdout
    assert "PASSED test_flipping.py::test_timing_fails_once" in out, out
    assert "FAILED test_flipping.py::test_timing_fails_twice" in out, out
    assert "FAILED test_flipping.py::test_other_fails_once" in out, out
    assert "2 failed, 1 passed, 2 rerun" in out, out
