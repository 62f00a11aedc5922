"""Where a run cannot write: an output folder under a file, on a read-only or a full file system,
and a read-only MLflow store. Each is one clear message and exit status 2 through the real CLI,
as fast as the CLI starts (not after MLflow's ~100 s of retries), with no traceback and no half-made run folder.

Read-only and full file systems are real tmpfs mounts (root and mount privileges, as on this
project's machines and CI); where mounting is not allowed those cases are skipped, saying so, and
fail under CI=true (tests/support/require.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.cli import cli_env, run_cli
from support.require import require

SIM = ["server=simulated", "workload=quick", "telemetry.enabled=false", "plots=false"]
# About 40 ms a request, one at a time: the disk fills up long before the 400 are done.
LONG = [*SIM, "workload.warmup=1", "workload.requests=400", "server.sim.tokens=4", "tracking.enabled=false"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        require(done.returncode == 0, f"mounting a tmpfs is not allowed here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


# What a refusal may take beyond the CLI's own start-up: the checks are milliseconds; an MLflow
# import (~2 s), a server started first or MLflow's retries (~100 s) are not.
REFUSAL_MARGIN_S = 3.0


@pytest.fixture
def startup_s(tmp_path: Path) -> float:
    """The CLI's start-up on this machine now: composing, checking and refusing a typed-config error,
    the step just before the output folder and the store are checked."""
    started = time.monotonic()
    result = run_cli(tmp_path, *SIM, "workload.requests=0")
    assert result.returncode == 2 and "workload.requests must be at least 1" in result.stderr, result.output
    return time.monotonic() - started


def assert_clean_refusal(result, fragment: str, started: float, startup_s: float) -> None:
    assert result.returncode == 2, result.output
    assert fragment in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.output
    took = time.monotonic() - started
    assert took < startup_s + REFUSAL_MARGIN_S, f"refused after {took:.1f} s; the CLI starts in {startup_s:.1f} s"


@pytest.mark.timing
def test_an_output_folder_under_a_file(tmp_path, startup_s):
    (tmp_path / "afile").write_text("x")
    started = time.monotonic()
    result = run_cli(tmp_path, *SIM, f"hydra.run.dir={tmp_path / 'afile' / 'run'}")
    assert_clean_refusal(result, "is a file, not a folder", started, startup_s)
    assert "hydra.run.dir" in result.stderr


@pytest.mark.timing
def test_an_output_folder_on_a_read_only_file_system(tmp_path, tmpfs, startup_s):
    read_only = tmpfs("size=1m,ro")
    started = time.monotonic()
    result = run_cli(tmp_path, *SIM, f"hydra.run.dir={read_only / 'run'}")
    assert_clean_refusal(result, "Read-only file system", started, startup_s)
    started = time.monotonic()
    sweep = run_cli(tmp_path, "-m", *SIM, "workload.requests=1,2", f"hydra.sweep.dir={read_only / 'sweep'}")
    assert_clean_refusal(sweep, "hydra.sweep.dir", started, startup_s)


@pytest.mark.timing
def test_an_output_folder_on_a_full_disk(tmp_path, tmpfs, startup_s):
    full = tmpfs("size=256k")
    subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=4k"], capture_output=True, check=False)
    assert shutil.disk_usage(full).free < 4096  # full
    started = time.monotonic()
    result = run_cli(tmp_path, *SIM, f"hydra.run.dir={full / 'run'}")
    assert_clean_refusal(result, "No space left on device", started, startup_s)


@pytest.mark.timing
def test_a_read_only_mlflow_store(tmp_path, tmpfs, migrated_store, startup_s):
    store = tmpfs("size=64m")
    shutil.copyfile(migrated_store, store / "mlflow.db")
    subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
    started = time.monotonic()
    result = run_cli(tmp_path, *SIM, f"tracking.uri=sqlite:///{store / 'mlflow.db'}", "hydra.run.dir=run")
    assert_clean_refusal(result, "Read-only file system", started, startup_s)
    assert "cannot use the MLflow store" in result.stderr
    assert not (tmp_path / "run").exists()  # stopped before any request: no half-made run folder


def test_an_error_before_any_request_leaves_no_run_folder(tmp_path):
    result = run_cli(tmp_path, "server=openai", "workload=quick", "hydra.run.dir=run")
    assert result.returncode == 2 and "did not answer GET /v1/models" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_disk_that_fills_up_mid_run(tmp_path, tmpfs):
    disk = tmpfs("size=1m")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *LONG, f"hydra.run.dir={disk / 'run'}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = disk / "run" / "requests.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not records.exists() or len(records.read_text().splitlines()) < 20):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True, check=False)
    filled = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - filled < 10  # it stops at the next record, not after its 400 requests
    assert proc.returncode == 2, stdout + stderr
    assert "No space left on device" in stderr and "cannot write the run folder" in stderr
    assert "Traceback" not in stdout + stderr and "Logging error" not in stderr
    assert "[FAILED]" in stdout and "TTFT" in stdout  # the numbers measured are still shown
    written = len(records.read_text().splitlines())
    assert 20 <= written < 401
