"""The doctor on the embedded llama.cpp server, through the command line: four llama.cpp threads
on a 2-core machine. The report names the threads' contention for the cores and measures
num_thread at the free cores against it; the whole doctor stays within its default budget of
10 minutes of machine time. Answers are 8 tokens, so each request takes well under a second on a
quiet machine."""

from __future__ import annotations

import json
import shutil
import time

import psutil
import pytest
from support.cli import mlflow_runs, run_cli
from support.require import require, require_module

require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")

from sentinel_exp import tags as tag  # noqa: E402
from sentinel_exp.serve.engines import registry  # noqa: E402
from sentinel_exp.store.run_folder import RunFolder  # noqa: E402

pytestmark = pytest.mark.embedded

require(
    registry.bundled_model_path(),
    f"the bundled {registry.BUNDLED_TAG} GGUF is not installed ({registry.EXTRA_HINT})",
)


@pytest.mark.timing
@pytest.mark.timeout(720)
def test_threads_over_the_cores_are_named_and_num_thread_at_the_free_cores_verified(tmp_path, migrated_store):
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    started = time.monotonic()
    result = run_cli(
        tmp_path,
        "sweep=diagnose",
        "server=embedded",
        "options.num_thread=4",
        "options.num_predict=8",
        "hydra.run.dir=doctor",
        timeout_s=700,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.output[-4000:]
    assert elapsed <= 600, f"the doctor took {elapsed:.0f} s"
    folder = RunFolder(tmp_path / "doctor")
    report = folder.report.read_text()
    [threads] = [line for line in report.splitlines() if line.startswith("- CPU threads (num_thread)")]
    assert f"4 llama.cpp threads on {psutil.cpu_count()} cores" in threads, threads
    assert "num_thread=" in threads and "paired rounds" in threads
    # The answer: contention is the cause, and fewer threads are the fix, measured.
    answer = report.splitlines()[2]
    assert threads.startswith('- CPU threads (num_thread) (the seed\'s "CPU threads"): confirmed'), report
    assert answer.startswith("**E2E p50 ") and "Fix: num_thread=" in answer, answer
    assert "options.num_thread=" in report.partition("## Recommended configuration")[2].partition("##")[0]
    assert "no GPU on this machine" in report
    state = json.loads(folder.doctor.read_text())
    assert state["finished"] and "num_thread" in state["studies"] and state["spent_s"] <= 600
    [parent] = [r for r in mlflow_runs(tmp_path) if r.data.tags.get(tag.DOCTOR) == "true"]
    assert parent.info.status == "FINISHED" and parent.data.tags[tag.VERDICT].startswith("E2E p50 ")
