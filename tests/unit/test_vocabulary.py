"""One home per vocabulary: each stored name is spelt in one module and read from there.

The package's code is parsed with ast (docstrings left out: they may name what they describe);
a string constant that spells a stored name outside its home fails, with where it stands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from sentinel_exp import tags as tag

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "sentinel_exp"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constants that are a module's, class's or function's docstring."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def string_constants(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string constant in a module's code, f-string parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def spelt_outside(pattern: re.Pattern[str], home: set[str]) -> list[str]:
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative in home:
            continue
        out += [f"{relative}:{line}: {text!r}" for line, text in string_constants(path) if pattern.search(text)]
    return out


def test_tag_names_are_spelt_only_in_tags_py():
    found = spelt_outside(re.compile(r"\bsentinel\.[a-z]|mlflow\.parentRunId"), {"sentinel_exp/tags.py"})
    assert not found, "use sentinel_exp/tags.py:\n" + "\n".join(found)


def test_the_checker_sees_a_tag_literal():
    assert spelt_outside(re.compile(r"\bsentinel\.[a-z]"), set()), "tags.py itself spells them"


def test_tag_names_are_distinct_and_namespaced():
    names = {k: v for k, v in vars(tag).items() if k.isupper() and isinstance(v, str) and k != "PREFIX"}
    assert len(set(names.values())) == len(names)
    assert all(v.startswith(tag.PREFIX) for k, v in names.items() if k != "PARENT_RUN_ID")
    assert tag.choice("options") == "sentinel.choice.options"
    assert tag.input_sha256("workload.prompts_file") == "sentinel.input_sha256.workload.prompts_file"
    assert tag.lint("num_ctx") == "sentinel.lint.num_ctx"
    assert tag.package("httpx") == "sentinel.pkg.httpx"
