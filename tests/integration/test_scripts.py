"""The benchmark scripts in scripts/ still run and report what docs/fidelity.md quotes.

Short runs only: these guard the scripts against rot (imports, argument handling, the shape of
their report), not the figures, which come from full runs quoted in docs/fidelity.md.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.require import require_module

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # From another directory, as a user would: the script must find the package on its own.
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1))


@pytest.mark.timing
def test_fidelity_bench_scores_the_floor_client_against_the_servers_emit_times(tmp_path: Path) -> None:
    result = run_script(
        "bench_fidelity.py", "--concurrency", "1", "--requests", "4", "--clients", "floor", cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    row = re.search(r"│\s+1 │ floor\s+│\s+([\d.]+) / ([\d.]+) / ([\d.]+) │.*│\s+(\d+) │$", result.stdout, re.M)
    assert row, result.stdout
    ttft_p50, ttft_p99, ttft_max, matched = (float(g) for g in row.groups())
    # Every request matched to the server's log; reading loopback costs more than nothing, well under
    # 20 ms. One late wake-up of a busy machine can reach the max; a request matched to another's
    # log entry would be off by a whole request (~200 ms).
    assert matched == 4 and 0 < ttft_p50 <= ttft_p99 <= ttft_max and ttft_p50 < 20 and ttft_max < 100


@pytest.mark.timing
def test_sampler_overhead_stays_under_two_percent_of_a_core(tmp_path: Path) -> None:
    # The README quotes under 1% over 20 s legs; 5 s legs here, where the one-time setup (~30 ms of
    # CPU) alone is 0.6% of the process delta, judged by the script itself against 2%.
    result = run_script(
        "bench_sampler_overhead.py", "--seconds", "5", "--interval", "0.1", "--goal-pct", "2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "goal < 2% of one core: PASS" in result.stdout
    taken = number(r"samples: (\d+) \(expected ~50\)", result.stdout)
    assert 35 <= taken <= 51  # a sampler thread woken late skips ticks (never bunches them)
    thread = number(r"sampler thread CPU : [\d.]+ s over [\d.]+ s = ([\d.]+)% of one core", result.stdout)
    process = number(r"process CPU delta  : .* = (-?[\d.]+)% of one core", result.stdout)
    assert 0 < thread < 2 and process < 2


def test_ui_screenshot_parses_its_arguments_without_starting_anything(tmp_path: Path) -> None:
    # The script itself needs Chromium and a minute; its page actions are what test_mlflow_ui.py checks.
    shown = run_script("ui_screenshot.py", "--help", cwd=tmp_path)
    assert shown.returncode == 0 and all(flag in shown.stdout for flag in ("--out", "--width", "--height", "--keep"))
    wrong = run_script("ui_screenshot.py", "--width", "wide", cwd=tmp_path)
    assert wrong.returncode == 2 and "invalid int value: 'wide'" in wrong.stderr


def test_gpu_check_without_torch_or_cuda_says_so_and_exits_2(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is here: the check would run for real (scripts/gpu_telemetry_check.py)")
    result = run_script("gpu_telemetry_check.py", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("SKIPPED: ")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "skipped" and summary["reason"] in result.stdout


@pytest.mark.embedded
@pytest.mark.timing
def test_embedded_adapter_benchmark_compares_both_sides(tmp_path: Path) -> None:
    require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")
    result = run_script(
        "bench_embedded_adapter.py",
        "--requests",
        "4",
        "--warmup",
        "1",
        "--max-tokens",
        "4",
        "--threads",
        "1",
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    in_process = number(r"in-process llama-cpp\s+([\d.]+)", result.stdout)
    via_server = number(r"server via httpx\s+([\d.]+)", result.stdout)
    # Same model, prompts and threads. The < 2 ms goal is the script's to report (docs/fidelity.md, Benchmarks);
    # here, on a shared 2-core CI box where 2 requests once differed by 55 ms in 140, the test
    # asserts the two sides measure the same thing: within a factor of 2, not a slower server.
    assert in_process > 0 and 0.5 < via_server / in_process < 2.0, result.stdout
    assert number(r"server decode rate / in-process: ([\d.]+)", result.stdout) > 0.5
    assert "identical answers on both sides: 4/4" in result.stdout


def test_store_stress_counts_every_run_of_processes_logging_at_once(tmp_path: Path) -> None:
    result = run_script("stress_store.py", "--processes", "2", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert number(r"(\d+) complete", result.stdout) == 2 and number(r"(\d+) failed", result.stdout) == 0
