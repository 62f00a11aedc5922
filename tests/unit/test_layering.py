"""The import rules of docs/architecture.md ("Import rules"), one statement per package, checked on
the source.

Every module under sentinel_exp/ is parsed with ast; nothing is imported or run. Imports inside
functions and `if TYPE_CHECKING:` blocks count too: a lazy or type-only import is still a
dependency. An import that breaks a rule is allowed only if EXCEPTIONS lists it with a reason,
and an exception that no longer happens must be removed, so the list stays the true one. Each
rule is also fed imports that break it, and must refuse them: a rule that lets everything through
would otherwise pass unseen.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "sentinel_exp"

# The shared vocabulary at the top: importable from every side (the package itself for its
# __version__). Everything else lives in a subpackage named for its role.
SHARED = frozenset(
    {
        "sentinel_exp",
        "sentinel_exp.names",
        "sentinel_exp.errors",
        "sentinel_exp.records",
        "sentinel_exp.eventloop",
        "sentinel_exp.urls",
        "sentinel_exp.tags",
    }
)
# `python -m sentinel_exp`, `python -m sentinel_exp.compare`, `python -m sentinel_exp.sync`.
ENTRY_POINTS = frozenset({"sentinel_exp.__main__", "sentinel_exp.compare", "sentinel_exp.sync"})
MAX_TOP_MODULES = 8  # besides __init__ and __main__

ANALYSIS = "sentinel_exp.analysis"
SERVE = "sentinel_exp.serve"
ENGINES = "sentinel_exp.serve.engines"
TELEMETRY = "sentinel_exp.telemetry"
STORE = "sentinel_exp.store"
HYDRA_PACKAGES = ("sentinel_exp.cli", "sentinel_exp.config", "sentinel_exp.sweep")
# Pure modules outside analysis/: the verdicts of other packages, kept apart from their I/O.
PURE_ELSEWHERE = frozenset(
    {
        "sentinel_exp.checks.options",
        "sentinel_exp.run.give_up",
        "sentinel_exp.telemetry.summary",
        # The doctor's reasoning, apart from its steps that measure (doctor/steps.py, doctor/state.py).
        "sentinel_exp.doctor.evidence",
        "sentinel_exp.doctor.hypotheses",
        "sentinel_exp.doctor.verdicts",
        "sentinel_exp.doctor.text",
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
HYDRA = ("hydra", "omegaconf")
HEAVY_FOR_TELEMETRY = ("mlflow", "hydra", "omegaconf", "httpx", "httpx_sse", "numpy")


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


@functools.cache
def package_imports() -> tuple[tuple[str, Import], ...]:
    """(module, import) for every import in the package; parsed once, each rule walks the same."""
    return tuple(
        (module, imp)
        for module, path in MODULES.items()
        for imp in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", set(MODULES))
    )


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def top(name: str) -> str:
    return name.split(".", 1)[0]


def ours(name: str) -> bool:
    return top(name) == "sentinel_exp"


def is_pure(module: str) -> bool:
    return inside(module, ANALYSIS) or module in PURE_ELSEWHERE


def is_runner(module: str) -> bool:
    return module not in SHARED and not inside(module, SERVE) and not inside(module, TELEMETRY)


# --- the rules: each (importing module, imported module) -> allowed --------------------------------


def analysis_pure(module: str, target: str) -> bool:
    return not is_pure(module) or top(target) not in IO_MODULES


def hydra_in_config_layer(module: str, target: str) -> bool:
    return top(target) not in HYDRA or any(inside(module, package) for package in HYDRA_PACKAGES)


def mlflow_in_store(module: str, target: str) -> bool:
    return top(target) != "mlflow" or inside(module, STORE)


def serve_standalone(module: str, target: str) -> bool:
    if not inside(module, SERVE):
        return True
    if ours(target):
        return target in SHARED or inside(target, SERVE)
    return top(target) not in ("mlflow", *HYDRA)


def telemetry_light(module: str, target: str) -> bool:
    if not inside(module, TELEMETRY):
        return True
    if ours(target):
        return target in SHARED or inside(target, TELEMETRY)
    return top(target) not in HEAVY_FOR_TELEMETRY


def engines_private(module: str, target: str) -> bool:
    return not (is_runner(module) and inside(target, ENGINES))


def vocabulary_at_the_top(module: str, target: str) -> bool:
    return module not in SHARED or not ours(target) or target in SHARED


@dataclass(frozen=True)
class Rule:
    name: str
    statement: str  # as docs/architecture.md words it
    allows: Callable[[str, str], bool]
    # Imports the rule must refuse: (importing module, one line of its source).
    refuses: tuple[tuple[str, str], ...]


RULES = (
    Rule(
        "analysis-pure",
        "analysis/ is pure: no file, process, socket, clock, thread or logging module, and no open, print "
        "or input; so are checks/options.py, run/give_up.py and telemetry/summary.py",
        analysis_pure,
        (
            ("sentinel_exp.analysis.stats", "import time"),
            ("sentinel_exp.analysis.comparison", "from pathlib import Path"),
            ("sentinel_exp.run.give_up", "import logging"),
        ),
    ),
    Rule(
        "hydra-in-config-layer",
        "Hydra and OmegaConf are imported only in cli/, config/ and sweep/ (and hydra_plugins/, outside the package)",
        hydra_in_config_layer,
        (
            ("sentinel_exp.run.experiment", "from omegaconf import DictConfig"),
            ("sentinel_exp.store.upload", "import hydra"),
        ),
    ),
    Rule(
        "mlflow-in-store",
        "MLflow is imported only in store/; the commands that read runs (cli/compare.py, cli/sync.py) go through it",
        mlflow_in_store,
        (
            ("sentinel_exp.cli.compare", "from mlflow.tracking import MlflowClient"),
            ("sentinel_exp.run.experiment", "import mlflow"),
        ),
    ),
    Rule(
        "serve-standalone",
        "serve/ stands alone: it imports only serve/ and the shared vocabulary at the top, never MLflow, "
        "Hydra or OmegaConf; it runs as its own process",
        serve_standalone,
        (
            ("sentinel_exp.serve.app", "from sentinel_exp.clients import http1"),
            ("sentinel_exp.serve.launch", "from sentinel_exp.store.run_folder import RunFolder"),
            ("sentinel_exp.serve.engines.simulated", "import mlflow"),
        ),
    ),
    Rule(
        "telemetry-light",
        "telemetry/ is light: it imports only telemetry/ and the shared vocabulary, and neither MLflow, "
        "Hydra, OmegaConf, httpx nor numpy",
        telemetry_light,
        (
            ("sentinel_exp.telemetry.gpu", "import numpy as np"),
            ("sentinel_exp.telemetry.prometheus", "import httpx"),
            ("sentinel_exp.telemetry.sampler", "from sentinel_exp.run.monitor import RunMonitor"),
        ),
    ),
    Rule(
        "engines-private",
        "the runner (everything outside serve/, telemetry/ and the shared vocabulary) never imports "
        "serve/engines/: it talks to a bundled server over HTTP and starts it through serve/launch.py",
        engines_private,
        (
            ("sentinel_exp.run.experiment", "from sentinel_exp.serve.engines.simulated import SimulatedEngine"),
            ("sentinel_exp.cli.app", "from sentinel_exp.serve.engines import llamacpp"),
        ),
    ),
    Rule(
        "vocabulary-at-the-top",
        "the shared vocabulary at the top (names, errors, records, eventloop, urls, tags) imports nothing "
        "of the package but itself",
        vocabulary_at_the_top,
        (
            ("sentinel_exp.records", "from sentinel_exp.store.run_folder import RunFolder"),
            ("sentinel_exp.tags", "from sentinel_exp.analysis import slo"),
        ),
    ),
)
RULE_NAMES = frozenset(rule.name for rule in RULES)

# (rule, importing module, imported module) -> why it is allowed for now.
EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("engines-private", "sentinel_exp.run.servers", "sentinel_exp.serve.engines.registry"): (
        "server=auto and server=embedded ask which GGUF files the embedded engine can serve before "
        "starting it; goes once serve/launch.py answers that"
    ),
}


def breaches(imports: Iterable[tuple[str, Import]]) -> dict[tuple[str, str, str], list[int]]:
    """(rule, module, target) -> lines, for every import that breaks a rule."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for module, imp in imports:
        for rule in RULES:
            if not rule.allows(module, imp.target):
                lines = out.setdefault((rule.name, module, imp.target), [])
                if imp.line not in lines:  # `from x import a, b` is one line
                    lines.append(imp.line)
    return out


def io_calls(source: str) -> list[str]:
    """Calls of open, print or input in a module's source."""
    return [
        f"{node.func.id}() at line {node.lineno}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS
    ]


# --- the tests ---------------------------------------------------------------------------------------


def test_the_checker_sees_the_whole_package():
    assert {"sentinel_exp.run.experiment", "sentinel_exp.store.tracking", "sentinel_exp.analysis.stats"} <= set(MODULES)
    assert {"sentinel_exp.serve.app", "sentinel_exp.serve.engines.simulated", "sentinel_exp.telemetry.summary"} <= set(
        MODULES
    )
    # A module the tree really has, with a known import of each form.
    targets = {imp.target for module, imp in package_imports() if module == "sentinel_exp.run.servers"}
    assert {"sentinel_exp.serve.engines.registry", "sentinel_exp.errors"} <= targets
    conclusion = {imp.target for module, imp in package_imports() if module == "sentinel_exp.run.conclusion"}
    assert {"sentinel_exp", "sentinel_exp.analysis.diagnosis"} <= conclusion


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


def test_the_top_holds_only_the_vocabulary_and_the_entry_points():
    at_top = {m for m, path in MODULES.items() if path.parent == PACKAGE_DIR and path.name != "__init__.py"}
    assert at_top == (SHARED - {"sentinel_exp"}) | ENTRY_POINTS
    assert len(at_top - {"sentinel_exp.__main__"}) <= MAX_TOP_MODULES


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_import_rule_holds(rule):
    found = {
        key: lines
        for key, lines in breaches(package_imports()).items()
        if key[0] == rule.name and key not in EXCEPTIONS
    }
    assert not found, f"{rule.name}: {rule.statement}\n" + "\n".join(
        f"{module} imports {target} (line {', '.join(map(str, lines))}); see docs/architecture.md"
        for (_, module, target), lines in sorted(found.items())
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_a_deliberate_violation_fails(rule):
    """Each rule's refused imports, written as source and parsed like the package's, are breaches."""
    for module, line in rule.refuses:
        assert module in MODULES, f"{module} is not a module of the package: the example tests nothing"
        imports = [(module, imp) for imp in imports_of(line + "\n", module, False, set(MODULES))]
        found = breaches(imports)
        assert any(key[0] == rule.name and key[1] == module for key in found), f"{rule.name} let `{line}` through"


def test_every_exception_is_still_needed_and_says_why():
    current = breaches(package_imports())
    stale = [key for key in EXCEPTIONS if key not in current]
    assert not stale, f"no longer happens, remove from EXCEPTIONS: {stale}"
    assert all(key[0] in RULE_NAMES and len(reason) > 30 for key, reason in EXCEPTIONS.items())


def test_pure_modules_call_no_io_builtins():
    pure = sorted(m for m in MODULES if is_pure(m))
    assert {"sentinel_exp.analysis.comparison", "sentinel_exp.run.give_up"} <= set(pure)
    for module in pure:
        calls = io_calls(MODULES[module].read_text(encoding="utf-8"))
        assert not calls, f"{module} is pure (analysis-pure) but calls {calls}"


def test_a_print_in_a_pure_module_is_seen():
    assert io_calls("def f(x):\n    print(x)\n    return open('f')\n") == ["print() at line 2", "open() at line 3"]


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
