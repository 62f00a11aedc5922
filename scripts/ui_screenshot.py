"""The MLflow UI screenshots of the docs (docs/mlflow-ui.md), remade in one command.

Runs a small sweep on the bundled simulated server into a temporary MLflow store, serves it with
`mlflow ui`, and photographs with headless Chromium (Debian's `chromium` package):

- the runs table, the sweep's parent expanded over its two jobs, with the latency columns the
  docs suggest adding (set here through a shared view, as if picked in "Columns");
- the parent's Artifacts tab with report.md rendered.

    python scripts/ui_screenshot.py            # docs/img/mlflow_runs.png, docs/img/mlflow_report.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlflow_ui
from headless_chromium import Chromium

REPO = Path(__file__).resolve().parent.parent
SWEEP = (
    "-m",
    "server=simulated",
    "workload=quick",
    "workload.requests=40",
    "server.sim.ttft_ms=40,48",
)
# The columns docs/mlflow-ui.md suggests adding to the runs table.
LATENCY_COLUMNS = ("ttft_ms_p50", "ttft_ms_p95", "e2e_ms_p50", "output_tokens_per_s", "cold_starts", "error_rate")
RUN_NAME = "attributes.`Run Name`"
VIEW_KEY = "sentinel-latency"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the two PNGs")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900, help="of the report; the runs table gets 60%%")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    return parser.parse_args(argv)


def run_sweep(cwd: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sentinel_exp", *SWEEP],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "CI": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        sys.exit(f"the sweep failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"sweep done in {time.monotonic() - started:.0f} s")


def sweep_runs(store_uri: str) -> tuple[str, str, int]:
    """(experiment id, the sweep's parent run id, how many children it has)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.get_experiment_by_name("sentinel-exp")
    if experiment is None:
        sys.exit("the sweep logged no experiment 'sentinel-exp'")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sentinel.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # What a user gets by ticking these in "Columns": stored as a shared view, which the UI reads from the URL.
    view = {
        "selectedColumns": [RUN_NAME] + [f"metrics.`{name}`" for name in LATENCY_COLUMNS],
        "columnOrder": [RUN_NAME] + [f"metrics.`{name}`" for name in LATENCY_COLUMNS],
        "columnWidths": {RUN_NAME: 430},
    }
    client.set_experiment_tag(experiment.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view))
    return experiment.experiment_id, parent.info.run_id, len(children)


def photograph(base: str, experiment_id: str, parent: str, children: int, out: Path, width: int, height: int) -> None:
    with Chromium(width=width, height=height * 3 // 5) as browser:  # three rows: no need for a tall page
        url = f"{mlflow_ui.runs_table_url(base, experiment_id)}&viewStateShareKey={VIEW_KEY}"
        browser.open(url)
        browser.wait_for(f"({mlflow_ui.RUN_ROWS_JS}).length >= 1", 90, what="the runs table")
        mlflow_ui.close_assistant(browser)
        mlflow_ui.close_shared_view_banner(browser)
        mlflow_ui.expand_run(browser, parent, children)
        browser.wait_for("document.body.innerText.includes('ttft_ms_p50')", 30, what="the metric columns")
        time.sleep(1.0)  # the grid sizes its columns after the rows arrive
        browser.screenshot(out / "mlflow_runs.png")

        browser.resize(width, height)
        browser.open(mlflow_ui.artifact_url(base, experiment_id, parent, "report.md"))
        browser.wait_for("document.body.innerText.includes('Verdict')", 60, what="report.md rendered")
        mlflow_ui.close_assistant(browser)
        time.sleep(1.0)
        browser.screenshot(out / "mlflow_report.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cwd = Path(tempfile.mkdtemp(prefix="sentinel-ui-"))
    try:
        run_sweep(cwd)
        store = f"sqlite:///{cwd / 'mlflow.db'}"
        experiment_id, parent, children = sweep_runs(store)
        with mlflow_ui.serve(store, cwd, log=cwd / "mlflow_ui.log") as base:
            photograph(base, experiment_id, parent, children, args.out, args.width, args.height)
        for name in ("mlflow_runs.png", "mlflow_report.png"):
            print(args.out / name)
    finally:
        if args.keep:
            print(f"store kept in {cwd}")
        else:
            shutil.rmtree(cwd, ignore_errors=True)


if __name__ == "__main__":
    main()
