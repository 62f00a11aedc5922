"""A sweep in the MLflow UI: a real sweep, a real `mlflow ui`, looked at with a real headless Chromium.

Chromium is Debian's `chromium` package, driven over its DevTools pipe (scripts/headless_chromium.py):
nothing is downloaded at run time. Without it the test is skipped, except in CI, where .ci/run
installs it and the test must run.
"""

from __future__ import annotations

import re
import sys

import pytest
from support.cli import REPO, mlflow_runs, run_cli
from support.require import require

sys.path.insert(0, str(REPO / "scripts"))

import mlflow_ui
from headless_chromium import Chromium, find_chromium

from sentinel_exp.store.tracking import browse_hint, runs_table_path

pytestmark = pytest.mark.slow

require(find_chromium(), "no Chromium on PATH (apt-get install chromium)")

SWEEP = ("-m", "server=simulated", "workload=quick", "workload.requests=4", "server.sim.ttft_ms=40,48")
SWEEP_FILES = {"report.md", "compare.md", "ttft_cdfs.png", "ttft_percentiles.png"}
JOB_FILES = {"report.md", "latency_cdf.png", "timeline.png", "requests.jsonl", "summary.json", "config.yaml"}


def test_the_runs_table_nests_a_sweeps_jobs_under_its_parent_and_the_parent_shows_its_report(tmp_path):
    result = run_cli(tmp_path, *SWEEP)
    assert result.returncode == 0, result.output
    runs = mlflow_runs(tmp_path)
    [parent] = [run for run in runs if run.data.tags.get("sentinel.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    experiment_id = parent.info.experiment_id

    # The console says how to serve the store and which page to open: the runs table, not the
    # GenAI overview MLflow 3 opens an experiment on.
    [hint] = [line for line in result.stdout.splitlines() if line.startswith("sweep: MLflow run")]
    opened = re.search(r"then open http://127\.0\.0\.1:5000(\S+)\)$", hint)
    assert "browse: mlflow ui --backend-store-uri sqlite:///mlflow.db" in hint and opened, hint
    page = opened.group(1)
    expected = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert page == runs_table_path(experiment_id) == expected
    assert browse_hint("https://mlflow.example:8443/", "7") == (
        "open https://mlflow.example:8443/#/experiments/7/runs?workflowType=machine_learning"
    )

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_ui.serve(store, tmp_path, log=tmp_path / "mlflow_ui.log") as base, Chromium() as browser:
        browser.open(base + page)
        browser.wait_for(f"({mlflow_ui.RUN_ROWS_JS}).length >= 1", 90, what="the runs table")
        text = browser.text()
        assert "3 matching runs" in text and "No data available" not in text, text[:2000]
        # Collapsed, the table holds the study alone: the parent, with an expander.
        [row] = mlflow_ui.run_rows(browser)
        assert row["run_id"] == parent.info.run_id and row["expander"], row
        assert row["name"] == parent.info.run_name and row["name"].startswith("sweep: ")

        mlflow_ui.expand_run(browser, parent.info.run_id, children=2)
        top, *nested = mlflow_ui.run_rows(browser)
        assert top["run_id"] == parent.info.run_id
        assert {r["run_id"] for r in nested} == {c.info.run_id for c in children}
        assert {r["name"] for r in nested} == {c.info.run_name for c in children}
        # Nested: right under the parent, and indented further than it.
        assert [r["index"] for r in nested] == [top["index"] + 1, top["index"] + 2]
        assert all(r["indent"] > top["indent"] for r in nested), (top, nested)

        browser.open(mlflow_ui.artifact_url(base, experiment_id, parent.info.run_id, "report.md"))
        browser.wait_for(
            f"document.querySelectorAll('[data-testid=\"artifact-tree-node\"]').length >= {len(SWEEP_FILES)}",
            60,
            what="the parent's artifact tree",
        )
        assert set(mlflow_ui.artifact_names(browser)) == SWEEP_FILES
        # report.md is rendered in place: its comparison heading is text on the page.
        browser.wait_for("document.body.innerText.includes('ttft_ms=48 vs ttft_ms=40')", 30, what="report.md")

        child = children[0].info.run_id
        browser.open(mlflow_ui.artifact_url(base, experiment_id, child))
        browser.wait_for(
            f"document.querySelectorAll('[data-testid=\"artifact-tree-node\"]').length >= {len(JOB_FILES)}",
            60,
            what="a job's artifact tree",
        )
        assert set(mlflow_ui.artifact_names(browser)) >= JOB_FILES
