"""CI runs the README's test command verbatim: the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    tests = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Tests\n", 1)[1]
    [command] = re.findall(r"```bash\n(.+?)\n```", tests.split("\n## ", 1)[0], flags=re.S)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert ci[-1] == command
    assert "-m timing" in command and '-m "not timing"' in command  # every test runs, in one pass or the other
