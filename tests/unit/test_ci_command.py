"""CI runs the README's test command verbatim: the two cannot drift apart, nor the copy in the
docs site's development page."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_test_command() -> str:
    tests = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Tests\n", 1)[1]
    [command] = re.findall(r"```bash\n(.+?)\n```", tests.split("\n## ", 1)[0], flags=re.S)
    return command


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    command = readme_test_command()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert ci[-1] == command
    # Every test runs, in one pass or the other.
    assert '-m "not timing and not cluster"' in command and '-m "timing or cluster"' in command
    # The docs site is built in strict mode (a broken link or anchor fails), before the tests.
    assert " && mkdocs build --strict && python -m pytest " in command


def test_the_development_page_shows_the_same_command() -> None:
    page = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    section = page.split("\n## The test command\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```bash\n(.+?)\n```", section, flags=re.S) == [readme_test_command()]
