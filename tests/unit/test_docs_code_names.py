"""The docs name the code as it is: every source path they quote exists, every dotted name of a
module, class or function resolves in the source, and the package map of docs/architecture.md
names every module of the package. Checked on the source with ast: nothing is imported."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sentinel_exp"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CODE_SPAN = re.compile(r"`([^`\n]+)`")
SOURCE_PATH = re.compile(r"^[\w./-]+/[\w.-]+\.(py|sh|yaml|md|txt|jsonl)$")
DOTTED = re.compile(r"^[a-z_]+(\.[A-Za-z_]\w*)+$")
# Where a quoted path may start: the repository, the package (the docs' usual shorthand), tests/,
# and the prompt sets the package ships (`prompts/questions.txt`).
ROOTS = (REPO, PACKAGE, REPO / "tests", PACKAGE / "data")


def spans(document: Path) -> list[str]:
    return CODE_SPAN.findall(document.read_text(encoding="utf-8"))


def module_file(dotted: str) -> Path | None:
    base = PACKAGE.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def names_in(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module ('' -> functions, classes, assignments) and each class's members."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[""].add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out[""].update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            out[""].update(alias.asname or alias.name for alias in node.names)
        if isinstance(node, ast.ClassDef):
            out[node.name] = {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            } | {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return out


def unresolved(dotted: str) -> str | None:
    """Why `dotted` (package.module.Name.member, under sentinel_exp) does not resolve; None if it
    does or is not a name of the code (a config key such as `sweep.objective`)."""
    parts = dotted.split(".")
    if not (PACKAGE / parts[0]).is_dir():
        return None
    for cut in range(len(parts), 1, -1):
        path = module_file(".".join(parts[:cut]))
        if path is not None:
            break
    else:
        return None
    rest = parts[cut:]
    if not rest:
        return None
    names = names_in(path)
    if rest[0] not in names[""]:
        return f"{path.relative_to(REPO)} has no {rest[0]}"
    if len(rest) > 1 and rest[0] in names and rest[1] not in names[rest[0]]:
        return f"{rest[0]} in {path.relative_to(REPO)} has no {rest[1]}"
    return None


def test_the_resolver_tells_code_from_config_keys() -> None:
    assert unresolved("run.experiment.run") is None
    assert unresolved("store.upload.Uploader._close_orphans") is None
    assert unresolved("sweep.objective") is None and unresolved("telemetry.prometheus_url") is None
    assert unresolved("run.experiment.no_such_step") == "sentinel_exp/run/experiment.py has no no_such_step"
    assert unresolved("store.upload.Uploader.nope") == "Uploader in sentinel_exp/store/upload.py has no nope"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_source_path_a_page_quotes_exists(document: Path) -> None:
    quoted = {s.rstrip("/") for s in spans(document) if SOURCE_PATH.match(s) and "<" not in s}
    missing = sorted(p for p in quoted if not any((root / p).exists() for root in ROOTS))
    assert not missing, f"{document.name} quotes paths that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_dotted_name_of_the_code_resolves(document: Path) -> None:
    problems = sorted({p for s in spans(document) if DOTTED.match(s) and (p := unresolved(s))})
    assert not problems, f"{document.name}: {problems}"


def test_the_package_map_names_every_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    package_map = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    rows = {row.split("|")[1].strip(): row for row in package_map.splitlines() if row.startswith("| `")}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or "__pycache__" in relative.parts:
            continue
        named = f"`{relative.as_posix()}`" in package_map
        # telemetry/, serve/ and serve/engines/ name their modules within their own row.
        folder = f"`{relative.parent.as_posix()}/`"
        in_row = any(folder in key and f"`{path.name}`" in row for key, row in rows.items())
        if not (named or in_row):
            missing.append(relative.as_posix())
    assert not missing, f"docs/architecture.md's package map does not name: {missing}"
