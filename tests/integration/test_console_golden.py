"""What a person sees, pinned: the console output of a simulated run, a sweep and a comparison,
against golden files in tests/data/golden with every number, id, path and time masked.

A change to what the console prints fails here, so a refactoring that should change nothing can
prove it. A deliberate change rewrites the files: SENTINEL_UPDATE_GOLDEN=1 python -m pytest
tests/integration/test_console_golden.py, then read the diff before committing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support.cli import CliResult, run_cli

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
SIM = ("server=simulated", "server.sim.jitter_ms=0", "server.sim.load_ms=0", "workload.requests=20")

_MASKS = (
    (re.compile(r"(https?|sqlite)://[^\s)]*[^\s),.:;]"), "<url>"),
    (re.compile(r"(?<![\w:/.])(/[\w.@:+-]+)+/?"), "<path>"),  # before numbers: paths hold dates and times
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
    (re.compile(r"(?<![\w.])[+-]?\d[\d,]*(\.\d+)?(?!\w)"), "N"),
    (re.compile(r"([━─═┄]|\s)\1+"), r"\1"),  # rules and padding follow the numbers' widths
)
# Said once per machine (matplotlib's font cache), or only on a busy machine (the contention
# warning), not by what is tested.
_NOISE = ("generated new fontManager", "warning: other processes kept")
# A verdict's small parts come and go with the machine's load (a part under half a percent is
# left out): the verdict itself, what the time mostly is, is what stays.
_VERDICT = re.compile(r"^((?:TTFT|E2E) is mostly [\w ]+):.*$")


def masked(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if any(noise in line for noise in _NOISE):
            continue
        line = _VERDICT.sub(r"\1: ...", line)
        for pattern, replacement in _MASKS:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def check(name: str, result: CliResult) -> None:
    assert result.returncode == 0, result.output
    seen = f"## stdout\n{masked(result.stdout)}## stderr\n{masked(result.stderr)}"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("SENTINEL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(seen, encoding="utf-8")
    assert seen == path.read_text(encoding="utf-8"), f"{name}: the console output changed; see {path}"


def test_masking_keeps_words_and_hides_what_varies():
    line = "run 0123456789abcdef0123456789abcdef at http://127.0.0.1:39799: E2E p50   40.8 ms, 12 tok/s, /tmp/x/y.jsonl"
    assert masked(line) == "run <id> at <url>: E2E p50 N ms, N tok/s, <path>\n"


@pytest.mark.timing
def test_console_of_a_run_a_sweep_and_a_comparison_is_unchanged(tmp_path: Path) -> None:
    check("run", run_cli(tmp_path, *SIM))
    sweep = run_cli(tmp_path, "-m", *SIM, "server.sim.ttft_ms=50,80")
    check("sweep", sweep)
    [folder] = [p.parent for p in tmp_path.glob("multirun/*/*/compare.md")]
    check("compare", run_cli(tmp_path, str(folder), module="sentinel_exp.compare"))
