"""A real `mlflow ui` on a free loopback port, and what a browser does on its pages.

Shared by scripts/ui_screenshot.py (the docs' screenshots) and the browser test
(tests/integration/test_mlflow_ui.py), so that the pictures show what the test checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from headless_chromium import Chromium

from sentinel_exp.store.tracking import runs_table_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(store_uri: str, cwd: Path, timeout_s: float = 120, log: Path | None = None) -> Iterator[str]:
    """`mlflow ui` against this store until the block ends; yields its base URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # MLflow 3 also starts a job runner and a handful of queue consumers (GenAI jobs): pages do not need them.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn workers are stopped with it, as one process group
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(proc, base, timeout_s)
            yield base
        finally:
            stop(proc)


def wait_until_healthy(proc: subprocess.Popen[bytes], base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode} before it answered")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow ui did not answer on {base} within {timeout_s:.0f} s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def runs_table_url(base: str, experiment_id: str) -> str:
    return base + runs_table_path(experiment_id)


def artifact_url(base: str, experiment_id: str, run_id: str, path: str = "") -> str:
    """A run's Artifacts tab, with `path` selected and shown (markdown rendered, images drawn)."""
    tail = f"/{path}" if path else ""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts{tail}?workflowType=machine_learning"


# The runs table is an ag-grid: the Run Name column is pinned left, one row per visible run.
RUN_ROWS_JS = """
[...document.querySelectorAll('.ag-pinned-left-cols-container .ag-row')]
  .map(row => {
    const link = row.querySelector('a[href*="/runs/"]');
    const nameCell = row.querySelector('[col-id="attributes.`Run Name`"]');
    return link && nameCell ? {
      index: Number(row.getAttribute('row-index')),
      run_id: link.getAttribute('href').split('/runs/')[1],
      name: link.innerText.trim(),
      indent: Math.round(link.getBoundingClientRect().left - nameCell.getBoundingClientRect().left),
      expander: Boolean(nameCell.querySelector('button')),
    } : null;
  })
  .filter(Boolean)
  .sort((a, b) => a.index - b.index)
"""


class RunRow(TypedDict):
    index: int  # the grid's row index, 0 at the top
    run_id: str
    name: str
    indent: int  # px from the cell's left edge to the run's name: nesting shows as more
    expander: bool  # a parent's row has the button that shows its children


def run_rows(browser: Chromium) -> list[RunRow]:
    """The runs table's rows as shown, top to bottom."""
    rows: list[RunRow] = browser.evaluate(RUN_ROWS_JS)
    return rows


def open_runs_table(browser: Chromium, base: str, experiment_id: str, runs: int, timeout_s: float = 60) -> None:
    """The runs table, loaded: `runs` top-level rows shown, the assistant panel closed."""
    browser.open(runs_table_url(base, experiment_id))
    browser.wait_for(f"({RUN_ROWS_JS}).length >= {runs}", timeout_s, what=f"{runs} row(s) in the runs table")
    close_assistant(browser)


def expand_run(browser: Chromium, run_id: str, children: int, timeout_s: float = 30) -> None:
    """Click the expander of this parent's row and wait until its `children` rows show under it."""
    clicked = browser.evaluate(
        f"""(() => {{
          const link = document.querySelector('.ag-pinned-left-cols-container a[href$="/runs/{run_id}"]');
          const cell = link && link.closest('[col-id="attributes.`Run Name`"]');
          const button = cell && cell.querySelector('button');
          if (!button) return false;
          button.click();
          return true;
        }})()"""
    )
    if not clicked:
        raise RuntimeError(f"no expander on the row of run {run_id}")
    rows = json.dumps(RUN_ROWS_JS)  # the row query again, as a string the check below evaluates
    browser.wait_for(
        f"""(() => {{
          const rows = eval({rows});
          const at = rows.findIndex(r => r.run_id === '{run_id}');
          return at >= 0 && rows.length >= at + 1 + {children};
        }})()""",
        timeout_s,
        what=f"{children} child row(s) under run {run_id}",
    )


def click(browser: Chromium, selector: str) -> bool:
    """Click the first element matching this CSS selector; whether there was one."""
    found: bool = browser.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (e) e.click(); return !!e; }})()"
    )
    return found


def close_assistant(browser: Chromium) -> None:
    """MLflow 3.x opens an assistant panel beside the table; closed, the table gets the width."""
    click(browser, 'button[data-component-id="mlflow.assistant.chat_panel.close"]')


def close_shared_view_banner(browser: Chromium) -> None:
    click(browser, 'button[data-component-id="mlflow.experiment_page.shared_view.dismiss"]')


def artifact_names(browser: Chromium) -> list[str]:
    """The file names the Artifacts tab lists in its tree."""
    names: list[str] = browser.evaluate(
        "[...document.querySelectorAll('[data-testid=\"artifact-tree-node\"]')]"
        ".map(e => e.getAttribute('artifact-name'))"
    )
    return names
