"""The minimum effect reaches the verdicts from both places a user sets it: `compare.min_effect_pct`
in a sweep's config, and `--min-effect-pct` of `python -m sentinel_exp.compare`, the real CLI in a
subprocess both times. The simulated server answers exactly `server.sim.tokens` tokens, so the
arms' output lengths differ by exactly 1%: significant on every resample (p = 2/2001 before Holm),
and under the default minimum effect of 2%."""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import run_cli

SWEEP = (
    "-m",
    "server=simulated",
    "workload=quick",
    "workload.requests=20",  # the fewest a side that get a verdict
    "workload.warmup=1",
    "server.sim.load_ms=0",
    "server.sim.ttft_ms=5",
    "server.sim.itl_ms=0.5",
    "server.sim.tokens=100,101",
    "telemetry.enabled=false",
    "tracking.enabled=false",
    "plots=false",
)
ROW = re.compile(
    r"^\| output tokens per request \(median\) \(tokens\) \| 100 \| 101 \| \+1\.0% \| (.*?) \| (.*?) \|$", re.M
)


def output_length_verdict(markdown: str) -> str:
    found = ROW.search(markdown)
    assert found, markdown
    return found.group(2)


def method(markdown: str) -> str:
    [line] = [line for line in markdown.splitlines() if line.startswith("- method: ")]
    return line


def test_the_minimum_effect_is_set_by_the_config_and_by_the_compare_cli(tmp_path: Path) -> None:
    sweep = run_cli(tmp_path, *SWEEP, "compare.min_effect_pct=0")
    assert sweep.returncode == 0, sweep.output
    [compare_md] = tmp_path.glob("multirun/*/*/compare.md")
    from_config = compare_md.read_text(encoding="utf-8")
    assert output_length_verdict(from_config).startswith("differs (Holm p ")
    assert method(from_config).endswith("min effect 0%")

    folder = str(compare_md.parent)
    default = run_cli(tmp_path, folder, "--out", "default.md", module="sentinel_exp.compare")
    assert default.returncode == 0, default.output
    by_default = (tmp_path / "default.md").read_text(encoding="utf-8")
    assert output_length_verdict(by_default).startswith("no significant change (Holm p ")
    assert method(by_default).endswith("min effect 2%")

    flag = run_cli(tmp_path, folder, "--min-effect-pct", "0", "--out", "zero.md", module="sentinel_exp.compare")
    assert flag.returncode == 0, flag.output
    with_flag = (tmp_path / "zero.md").read_text(encoding="utf-8")
    assert output_length_verdict(with_flag).startswith("differs (Holm p ")
    assert method(with_flag).endswith("min effect 0%")
    # The same records and seed: only the verdict moved, not the interval.
    assert ROW.search(with_flag).group(1) == ROW.search(by_default).group(1) == "[+1.0, +1.0]"  # type: ignore[union-attr]
