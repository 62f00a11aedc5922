"""One home per vocabulary: each stored name is spelt in one module and read from there.

The package's code is parsed with ast (docstrings left out: they may name what they describe);
a string constant that spells a stored name outside its home fails, with where it stands.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_exp import tags as tag
from sentinel_exp.store.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "sentinel_exp"
RUN_FOLDER_NAMES = re.compile(
    r"\b(run|summary|sweep_job|sweep|study|study_arm)\.json\b|\b(requests|reused_requests|telemetry)\.jsonl\b"
    r"|\b(config|multirun)\.yaml\b|\b(report|compare|noise)\.md\b|\b(server|study)\.log\b"
    r"|\b(latency_cdf|timeline)\.png\b|_cdfs\.png|_percentiles\.png|\bdoctor\.json\b|_ladder\.png"
)
# Strings that spell such a name for another file: (module, string) -> what it is.
NOT_RUN_FOLDER_FILES = {
    ("sentinel_exp/config/reference.py", "config.yaml"): "conf/config.yaml, Hydra's primary config",
}


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


def spelt_outside(pattern: re.Pattern[str], home: set[str], code_only: bool = False) -> list[str]:
    """Where a string constant outside the `home` modules matches; `code_only` skips prose."""
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative in home:
            continue
        out += [
            f"{relative}:{line}: {text!r}"
            for line, text in string_constants(path)
            if pattern.search(text) and not (code_only and re.search(r"\s", text))
        ]
    return out


def test_tag_names_are_spelt_only_in_tags_py():
    found = spelt_outside(re.compile(r"\bsentinel\.[a-z]|mlflow\.parentRunId"), {"sentinel_exp/tags.py"})
    assert not found, "use sentinel_exp/tags.py:\n" + "\n".join(found)


def test_the_checker_sees_a_name_spelt_in_code():
    assert spelt_outside(re.compile(r"\bsentinel\.[a-z]"), set()), "tags.py itself spells them"
    in_run_folder = spelt_outside(RUN_FOLDER_NAMES, set(), code_only=True)
    assert any(line.startswith("sentinel_exp/store/run_folder.py") for line in in_run_folder)


def test_tag_names_are_distinct_and_namespaced():
    names = {k: v for k, v in vars(tag).items() if k.isupper() and isinstance(v, str) and k != "PREFIX"}
    assert len(set(names.values())) == len(names)
    assert all(v.startswith(tag.PREFIX) for k, v in names.items() if k not in ("PARENT_RUN_ID", "NOTE"))
    assert tag.PARENT_RUN_ID.startswith("mlflow.") and tag.NOTE.startswith("mlflow.")  # MLflow's own
    assert tag.choice("options") == "sentinel.choice.options"
    assert tag.input_sha256("workload.prompts_file") == "sentinel.input_sha256.workload.prompts_file"
    assert tag.lint("num_ctx") == "sentinel.lint.num_ctx"
    assert tag.package("httpx") == "sentinel.pkg.httpx"


def test_run_folder_file_names_are_spelt_only_in_run_folder_py():
    """A name in prose (help text, a field's doc) documents the file; a name that makes a path is
    code: a string without a space."""
    found = spelt_outside(RUN_FOLDER_NAMES, {"sentinel_exp/store/run_folder.py"}, code_only=True)
    found = [
        line
        for line in found
        if not any(line.startswith(f"{path}:") and line.endswith(f": {text!r}") for path, text in NOT_RUN_FOLDER_FILES)
    ]
    assert not found, "use store/run_folder.RunFolder:\n" + "\n".join(found)


def test_run_folder_names_every_file_a_run_leaves(tmp_path):
    folder = RunFolder(tmp_path)
    paths = [
        folder.run_json,
        folder.records,
        folder.summary,
        folder.telemetry,
        folder.config,
        folder.report,
        folder.latency_cdf,
        folder.timeline,
        folder.server_log,
        folder.sweep_job,
        folder.sweep_json,
        folder.compare,
        folder.noise,
        folder.multirun,
        folder.study,
        folder.study_log,
        folder.study_arm,
        folder.reused_records,
        folder.sweep_cdfs("ttft"),
        folder.sweep_percentiles("ttft"),
        folder.doctor,
        folder.doctor_ladder("prefill"),
    ]
    assert all(p.parent == tmp_path for p in paths)
    assert len({p.name for p in paths}) == len(paths)
    assert [p.name for p in paths[:3]] == ["run.json", "requests.jsonl", "summary.json"]
    assert folder.sweep_cdfs("e2e").name == "e2e_cdfs.png"
    assert RUN_FOLDER_NAMES.search(folder.partial_run_json(42).name)
    # A job's records: its own, else those of the earlier run it reused.
    assert folder.records_or_reused() is None
    folder.reused_records.write_text("")
    assert folder.records_or_reused() == folder.reused_records
    folder.records.write_text("")
    assert folder.records_or_reused() == folder.records


def test_what_files_hold_is_read_back_as_the_vocabulary_s_members(tmp_path):
    from sentinel_exp.names import Api, Phase, Role, RunStatus
    from sentinel_exp.records import RequestRecord
    from sentinel_exp.store.run_folder import new_sweep_file, read_run_file, write_run_file

    record = RequestRecord.from_dict(json.loads(RequestRecord(0, Phase.WARMUP, 0, Api.openai).to_json()))
    assert type(record.phase) is Phase and record.phase is Phase.WARMUP and record.api is Api.openai
    assert '"phase":"warmup"' in record.to_json()  # the file holds the plain value
    with pytest.raises(ValueError):
        RequestRecord.from_dict({"index": 0, "phase": "cooldown", "prompt_index": 0, "api": "chat"})

    write_run_file(tmp_path, new_sweep_file("s", "e", None, {}, "sweep-uid"))
    run = read_run_file(tmp_path)
    assert run.role is Role.SWEEP and run.status is RunStatus.RUNNING and run.uid == "sweep-uid"
    assert json.loads(RunFolder(tmp_path).run_json.read_text())["role"] == "sweep"
