"""Sweep bookkeeping: the value a job returns to the sweeper, and job outcomes read back from files."""

import json
import math

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf
from support.compose import composed, variant

from sentinel_exp.cli.app import config_dir
from sentinel_exp.cli.overrides import override_problems
from sentinel_exp.config.schema import typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.store.run_folder import RunFolder
from sentinel_exp.sweep.callbacks import (
    SweepSummary,
    distinguishing_labels,
    objective_value,
    read_outcomes,
    record_error,
)

METRICS = {"ttft_ms_p50": 41.5, "output_tokens_per_s": 200.0}


@pytest.mark.parametrize(
    ("metrics", "objective", "direction", "expected"),
    [
        (METRICS, "ttft_ms_p50", "minimize", 41.5),
        (METRICS, "output_tokens_per_s", "maximize", 200.0),
        ({"ttft_ms_p50": 0.0}, "ttft_ms_p50", "minimize", 0.0),  # a zero is a value, not a miss
        (None, "ttft_ms_p50", "minimize", math.inf),  # the job did not run
        (None, "output_tokens_per_s", "maximize", -math.inf),
        ({"requests_failed": 5.0}, "ttft_ms_p50", "minimize", math.inf),  # every request failed
        ({"requests_failed": 5.0}, "output_tokens_per_s", "maximize", -math.inf),
    ],
)
def test_a_job_returns_its_objective_or_the_worst_value(metrics, objective, direction, expected):
    assert objective_value(metrics, objective, direction) == expected


def test_objective_and_direction_are_checked():
    default = composed()
    bad = variant("sweep.objective= ")
    assert (default.sweep.objective, default.sweep.direction) == ("ttft_ms_p50", "minimize")
    with pytest.raises(ConfigError, match=r"sweep\.objective is empty \(a metric name, e\.g\. ttft_ms_p50\)"):
        typed_config(bad)
    assert override_problems(["sweep.direction=up"], config_dir()) == [
        "sweep.direction='up' is not valid: sweep.direction takes one of minimize, maximize"
    ]


def _job_config(output_dir, num, overrides):
    return OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "runtime": {"output_dir": str(output_dir)},
                "job": {"num": num},
                "overrides": {"task": overrides},
            }
        }
    )


def _sweep_config(sweep_dir):
    # Tracking off: the sweep's MLflow parent run is tested through the CLI (test_sweep_study.py).
    return OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep_dir)}, "overrides": {"task": ["model.name=a:1b,nope:1b"]}},
            "tracking": {"enabled": False, "experiment": "sentinel-exp"},
            "sweep": {"name": "none", "objective": "ttft_ms_p50", "direction": "minimize"},
        }
    )


def _job_return(status, value):
    ret = JobReturn()
    ret.status = status
    ret.return_value = value
    return ret


def test_job_outcomes_travel_through_the_sweep_folder(tmp_path):
    # A folder left by an earlier sweep into the same hydra.sweep.dir is not this sweep's job.
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / RunFolder.SWEEP_JOB).write_text(json.dumps({"sweep_id": "old", "num": 7, "overrides": []}))
    summary = SweepSummary()
    summary.on_multirun_start(_sweep_config(tmp_path))
    jobs = [(tmp_path / "0", ["model.name=a:1b"]), (tmp_path / "1", ["model.name=nope:1b"])]
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"metrics": METRICS}))
    record_error(tmp_path / "1", "model 'nope:1b' is not available")
    # Job #1 ends first, as it may with parallel workers.
    summary.on_job_end(_job_config(jobs[1][0], 1, jobs[1][1]), _job_return(JobStatus.COMPLETED, math.inf))
    summary.on_job_end(_job_config(jobs[0][0], 0, jobs[0][1]), _job_return(JobStatus.COMPLETED, 41.5))

    ok, failed = read_outcomes(tmp_path, summary.sweep_id)
    assert (ok.label, ok.error, ok.metrics) == (("#0", "model.name=a:1b"), None, METRICS)
    assert (failed.label, failed.error, failed.metrics) == (
        ("#1", "model.name=nope:1b"),
        "model 'nope:1b' is not available",
        None,
    )
    written = json.loads((tmp_path / "0" / RunFolder.SWEEP_JOB).read_text())
    assert written["objective"] == 41.5 and "objective" not in json.loads(
        (tmp_path / "1" / RunFolder.SWEEP_JOB).read_text()
    )


def test_an_unexpected_exception_is_the_jobs_error(tmp_path):
    summary = SweepSummary()
    summary.on_multirun_start(_sweep_config(tmp_path))
    (tmp_path / "0").mkdir()  # Hydra makes each job's folder before the job starts
    summary.on_job_end(_job_config(tmp_path / "0", 0, ["x=1"]), _job_return(JobStatus.FAILED, KeyError("boom")))
    [job] = read_outcomes(tmp_path, summary.sweep_id)
    assert job.error == "KeyError: 'boom'" and job.metrics is None


def test_a_single_run_leaves_no_outcome_file(tmp_path):
    config = _job_config(tmp_path, 0, [])
    config.hydra.mode = RunMode.RUN
    SweepSummary().on_job_end(config, _job_return(JobStatus.COMPLETED, 41.5))
    assert not (tmp_path / RunFolder.SWEEP_JOB).exists()


def test_sweep_jobs_are_named_by_what_differs_between_them():
    jobs = [
        ("#0", "model=qwen05", "workload.concurrency=1", "server=simulated"),
        ("#1", "model=qwen05", "workload.concurrency=4", "server=simulated"),
        ("#2", "model=llama32_1b", "workload.concurrency=1", "server=simulated"),
    ]
    assert distinguishing_labels(jobs) == [
        "#0 model=qwen05 concurrency=1",
        "#1 model=qwen05 concurrency=4",
        "#2 model=llama32_1b concurrency=1",
    ]


def test_two_swept_keys_that_end_alike_keep_their_whole_path():
    jobs = [
        ("#0", "server.keep_alive=1s", "workload.keep_alive=null", "workload.concurrency=1"),
        ("#1", "server.keep_alive=1s", "workload.keep_alive=-1", "workload.concurrency=2"),
        ("#2", "server.keep_alive=5m", "workload.keep_alive=null", "workload.concurrency=1"),
    ]
    assert distinguishing_labels(jobs) == [
        "#0 server.keep_alive=1s workload.keep_alive=null concurrency=1",
        "#1 server.keep_alive=1s workload.keep_alive=-1 concurrency=2",
        "#2 server.keep_alive=5m workload.keep_alive=null concurrency=1",
    ]


def test_swept_keys_come_from_the_sweeps_own_record(tmp_path):
    from sentinel_exp.sweep.callbacks import swept_keys

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n"
        "  sweeper:\n    params:\n      workload.keep_alive: null,-1\n"
        "  overrides:\n    task:\n    - server=simulated\n    - options=default,low_ctx\n"
        "    - workload.requests=range(1,3)\n    - server.url=http\\://x\\:1\n"
    )
    assert swept_keys(tmp_path) == {"options", "workload.requests", "workload.keep_alive"}
    assert swept_keys(tmp_path / "missing") == frozenset()
