"""The import rules of docs/architecture.md ("Import rules"), checked on the source.

Every module under sentinel_exp/ is parsed with ast; nothing is imported or run. Imports inside
functions and `if TYPE_CHECKING:` blocks count too: a lazy or type-only import is still a
dependency. An import that breaks a rule is allowed only if EXCEPTIONS lists it with a reason,
and an exception that no longer happens must be removed, so the list stays the true one.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "sentinel_exp"

SERVE = "sentinel_exp.serve"
ENGINES = "sentinel_exp.serve.engines"
TELEMETRY = "sentinel_exp.telemetry"
# Importable from every side: the package itself (its __version__), the vocabularies, the loop.
SHARED = frozenset({"sentinel_exp", "sentinel_exp.names", "sentinel_exp.eventloop"})
CONFIG_LAYER = frozenset(
    {
        "sentinel_exp.cli.app",
        "sentinel_exp.cli.help",
        "sentinel_exp.config.schema",
        "sentinel_exp.config.reference",
        "sentinel_exp.cli.overrides",
        "sentinel_exp.sweep.callbacks",
        "sentinel_exp.cli.study",
    }
)
PURE = frozenset(
    {
        "sentinel_exp.analysis.stats",
        "sentinel_exp.analysis.slo",
        "sentinel_exp.analysis.metric_names",
        "sentinel_exp.analysis.diagnosis",
        "sentinel_exp.checks.options",
        "sentinel_exp.run.give_up",
        "sentinel_exp.telemetry.summary",
    }
)
# What a pure module must not import: files, processes, sockets, clocks, threads, logging.
IO_MODULES = frozenset(
    {
        "asyncio",
        "http",
        "httpx",
        "io",
        "logging",
        "mlflow",
        "os",
        "pathlib",
        "psutil",
        "pynvml",
        "shutil",
        "socket",
        "sqlite3",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
    }
)
IO_BUILTINS = frozenset({"open", "print", "input"})

# (rule, importing module, imported module) -> why it is allowed for now.
EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("engines-private", "sentinel_exp.run.servers", "sentinel_exp.serve.engines.registry"): (
        "server=auto and server=embedded ask which GGUF files the embedded engine can serve before "
        "starting it; goes once serve/launch.py answers that"
    ),
}


@dataclass(frozen=True)
class Import:
    target: str  # dotted module name
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts}


MODULES = all_modules()


def imports_of(source: str, module: str, is_package: bool, known: frozenset[str] | set[str]) -> list[Import]:
    """Every module `source` imports. `from pkg import name` counts as pkg.name when that is a
    known module (a submodule), else as pkg; relative imports are resolved against `module`."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in known else base, node.lineno))
    return found


def module_imports() -> Iterator[tuple[str, Import]]:
    yield from _parsed_imports()


@functools.cache
def _parsed_imports() -> tuple[tuple[str, Import], ...]:
    """Parsed once: each rule's test walks the same imports."""
    return tuple(
        (module, imp)
        for module, path in MODULES.items()
        for imp in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", set(MODULES))
    )


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def top(name: str) -> str:
    return name.split(".", 1)[0]


def is_runner(module: str) -> bool:
    return module not in SHARED and not inside(module, SERVE) and not inside(module, TELEMETRY)


def serve_standalone(module: str, target: str) -> bool:
    """serve/ runs as its own process: it never imports the runner side, MLflow or Hydra."""
    if not inside(module, SERVE):
        return True
    if top(target) == "sentinel_exp":
        return target in SHARED or inside(target, SERVE)
    return top(target) not in ("mlflow", "hydra", "omegaconf")


def engines_private(module: str, target: str) -> bool:
    """The runner talks to bundled servers over HTTP; engine internals are the server's own."""
    return not (is_runner(module) and inside(target, ENGINES))


def telemetry_light(module: str, target: str) -> bool:
    """telemetry/ needs the standard library, psutil and (lazily) pynvml, nothing of the runner."""
    if not inside(module, TELEMETRY):
        return True
    if top(target) == "sentinel_exp":
        return target == "sentinel_exp.names" or inside(target, TELEMETRY)
    return top(target) not in ("mlflow", "hydra", "omegaconf", "httpx", "httpx_sse", "numpy")


def mlflow_in_tracking(module: str, target: str) -> bool:
    return top(target) != "mlflow" or module == "sentinel_exp.store.tracking"


def hydra_in_config_layer(module: str, target: str) -> bool:
    return top(target) not in ("hydra", "omegaconf") or module in CONFIG_LAYER


def pure_summaries(module: str, target: str) -> bool:
    return module not in PURE or top(target) not in IO_MODULES


RULES: dict[str, Callable[[str, str], bool]] = {
    "serve-standalone": serve_standalone,
    "engines-private": engines_private,
    "telemetry-light": telemetry_light,
    "mlflow-in-tracking": mlflow_in_tracking,
    "hydra-in-config-layer": hydra_in_config_layer,
    "pure-summaries": pure_summaries,
}


def breaches() -> dict[tuple[str, str, str], list[int]]:
    """(rule, module, target) -> lines, for every import that breaks a rule."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for module, imp in module_imports():
        for rule, allowed in RULES.items():
            if not allowed(module, imp.target):
                lines = out.setdefault((rule, module, imp.target), [])
                if imp.line not in lines:  # `from x import a, b` is one line
                    lines.append(imp.line)
    return out


def test_the_checker_sees_the_whole_package():
    assert {"sentinel_exp.run.experiment", "sentinel_exp.store.tracking", "sentinel_exp.analysis.stats"} <= set(MODULES)
    assert {"sentinel_exp.serve.app", "sentinel_exp.serve.engines.simulated", "sentinel_exp.telemetry.summary"} <= set(
        MODULES
    )
    # A module the tree really has, with a known import of each form.
    targets = {imp.target for module, imp in module_imports() if module == "sentinel_exp.run.servers"}
    assert {"sentinel_exp.serve.engines.registry", "sentinel_exp.errors"} <= targets
    live = {imp.target for module, imp in module_imports() if module == "sentinel_exp.run.conclusion"}
    assert {"sentinel_exp", "sentinel_exp.analysis.diagnosis"} <= live


def test_imports_resolve_relative_and_submodule_forms():
    source = (
        "from .gpu import GpuReading\n"
        "from . import cpu\n"
        "from .. import names\n"
        "import mlflow.tracking\n"
        "def lazy():\n"
        "    from sentinel_exp.serve.engines import registry\n"
    )
    known = {
        "sentinel_exp.names",
        "sentinel_exp.telemetry.cpu",
        "sentinel_exp.telemetry.gpu",
        "sentinel_exp.serve.engines.registry",
    }
    found = imports_of(source, "sentinel_exp.telemetry.summary", False, known)
    assert [(i.target, i.line) for i in found] == [
        ("sentinel_exp.telemetry.gpu", 1),
        ("sentinel_exp.telemetry.cpu", 2),
        ("sentinel_exp.names", 3),
        ("mlflow.tracking", 4),
        ("sentinel_exp.serve.engines.registry", 6),
    ]
    # In a package's __init__, "." is the package itself.
    assert imports_of("from .sampler import Sample\n", "sentinel_exp.telemetry", True, set()) == [
        Import("sentinel_exp.telemetry.sampler", 1)
    ]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_rule_holds(rule):
    found = {key: lines for key, lines in breaches().items() if key[0] == rule and key not in EXCEPTIONS}
    assert not found, "\n".join(
        f"{module} imports {target} (line {', '.join(map(str, lines))}): breaks {rule}; see docs/architecture.md"
        for (_, module, target), lines in sorted(found.items())
    )


def test_every_exception_is_still_needed_and_says_why():
    current = breaches()
    stale = [key for key in EXCEPTIONS if key not in current]
    assert not stale, f"no longer happens, remove from EXCEPTIONS: {stale}"
    assert all(key[0] in RULES and len(reason) > 30 for key, reason in EXCEPTIONS.items())


def test_summaries_do_no_io():
    for module in sorted(PURE & set(MODULES)):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        calls = [
            f"{node.func.id}() at line {node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS
        ]
        assert not calls, f"{module} is documented as pure but calls {calls}"


# Split so that this file does not match itself.
PRIVATE_NOTE_MARKS = ("DESIGN" + ".md", ".." + "/shared")
TEXT_SUFFIXES = frozenset({".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".json", ".cfg", ".ini", ".sh", ".rst"})


def project_text_files() -> Iterator[Path]:
    for folder in ("sentinel_exp", "conf", "scripts", "tests", "docs"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path
    for name in ("README.md", "pyproject.toml"):
        if (REPO / name).is_file():
            yield REPO / name


def test_nothing_cites_the_private_design_note():
    """The design lives in docs/: nothing may point at a note outside the repository."""
    files = list(project_text_files())
    assert REPO / "README.md" in files and any(p.parent == REPO / "docs" for p in files)
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if any(mark in line for mark in PRIVATE_NOTE_MARKS)
    ]
    assert not found, "cite docs/architecture.md or docs/measurement.md instead:\n" + "\n".join(found)
