"""The run folder as the source of truth: run.json, the telemetry series, what a killed run left,
and which folders a sync takes in which order."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace

import pytest

from sentinel_exp.cli.sync import Synced, exit_status, folders_to_sync
from sentinel_exp.errors import NotLogged, UserError
from sentinel_exp.names import RunStatus, ServerKind
from sentinel_exp.records import RequestRecord
from sentinel_exp.store.run_folder import (
    RunFile,
    RunFolder,
    RunJournal,
    Runner,
    RunSummary,
    SummaryServer,
    new_run_file,
    read_run_file,
    read_series,
    write_series,
)
from sentinel_exp.store.upload import abandoned_summary, find_sweep_folder, records_in


def _run_file(uid: str | None = None, **kw) -> RunFile:
    run = new_run_file("a run", "sentinel-exp", "sqlite:///mlflow.db", {"k": "v"}, {"p": "1"}, **kw)
    return run if uid is None else replace(run, uid=uid)


def test_run_json_round_trips_and_is_replaced_whole(tmp_path):
    journal = RunJournal(tmp_path, _run_file(parent_uid="sweep1"))
    journal.set_tags({"late": 3, "none": None})
    journal.add_artifacts([tmp_path / "report.md", tmp_path / "report.md"])
    journal.end(RunStatus.FAILED, "why")
    back = read_run_file(tmp_path)
    assert back == journal.run
    assert back.tags["late"] == "3" and "none" not in back.tags
    assert back.artifacts == ["report.md"] and back.parent_uid == "sweep1"
    assert back.status == "FAILED" and back.failure == "why" and back.end_ms >= back.start_ms
    assert back.tags["sentinel.runner_pid"] == str(os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == [RunFolder.RUN_JSON]  # no temporary file left


def test_a_folder_without_a_readable_run_json_is_named(tmp_path):
    with pytest.raises(UserError, match="is not a run folder"):
        read_run_file(tmp_path)
    (tmp_path / RunFolder.RUN_JSON).write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="cannot read"):
        read_run_file(tmp_path)


def test_the_runner_is_gone_when_its_pid_is_dead_or_reused():
    me = Runner.this_process()
    assert me.gone() is False
    assert me.boot_id and me.start_ticks and me.start_ticks > 0  # Linux: the kernel's own start of it
    # The wall clock's reading of a start moves as the clock is adjusted; the ticks since boot do not.
    assert replace(me, started=me.started + 60).gone() is False
    assert replace(me, start_ticks=me.start_ticks - 1).gone() is True  # the pid now belongs to another process
    assert replace(me, boot_id="another boot").gone() is True  # the machine restarted since
    assert Runner(2**22 + 12345, me.host, 0.0).gone() is True  # no such pid
    assert Runner(me.pid, socket.gethostname() + "-elsewhere", me.started).gone() is None
    # Written before the boot identity was kept: the wall clock's reading, with 2 s of slack.
    assert Runner(me.pid, me.host, me.started + 1.0).gone() is False
    assert Runner(me.pid, me.host, me.started - 100).gone() is True
    assert Runner.from_tags(me.tags()) == replace(me, started=round(me.started, 3))


def test_the_series_survives_a_line_cut_by_a_kill(tmp_path):
    write_series(tmp_path, [("cpu_pct", 12.5, 1000, 0), ("cpu_pct", 13, 2000, 1)])
    with open(tmp_path / "telemetry.jsonl", "a") as out:
        out.write('["cpu_pct", 1')
    assert read_series(tmp_path) == [("cpu_pct", 12.5, 1000, 0), ("cpu_pct", 13.0, 2000, 1)]


def _record(index: int, ok: bool, started_at: float, phase: str = "measured") -> RequestRecord:
    return RequestRecord(
        index=index,
        phase=phase,
        prompt_index=0,
        api="chat",
        ok=ok,
        started_at=started_at,
        ttft_ms=40.0 if ok else None,
        e2e_ms=100.0 if ok else None,
        chunk_times_ms=[40.0, 60.0] if ok else [],
        error_class=None if ok else "HTTP500",
    )


def test_a_killed_run_is_summarised_from_the_records_it_left(tmp_path):
    records = [_record(0, True, 1000.0, "warmup"), _record(0, True, 1001.0), _record(1, False, 1001.2)]
    records += [_record(2, True, 1001.5)]
    text = "".join(r.to_json() + "\n" for r in records) + '{"index": 3, "pha'  # the line being written
    (tmp_path / "requests.jsonl").write_text(text)
    left = records_in(tmp_path)
    assert len(left) == 4
    summary = abandoned_summary(left, _run_file(), "the runner was killed")
    assert summary.status == "FAILED" and summary.failure == "the runner was killed"
    assert summary.metrics["requests_ok"] == 2 and summary.metrics["requests_failed"] == 1
    assert summary.metrics["ttft_ms_p50"] == 40.0
    assert summary.errors == {"HTTP500": 1}
    # What summary.json of an abandoned run has always held, in that order, and nothing else.
    assert list(summary.to_dict()) == [
        "run_uid",
        "run_name",
        "status",
        "metrics",
        "errors",
        "warnings",
        "verdict",
        "failure",
    ]


def test_summary_json_round_trips_in_the_order_it_always_had(tmp_path):
    summary = RunSummary(
        run_uid="u1",
        run_name="a run",
        status=RunStatus.FINISHED,
        metrics={"ttft_ms_p50": 41.5, "requests_ok": 20.0},
        errors={},
        server=SummaryServer(ServerKind.simulated, "http://127.0.0.1:1"),
        model={"tag": "m", "digest": None},
        telemetry_notes=[],
        warnings=["w"],
        verdict=["TTFT is mostly prefill"],
        slo={"targets": []},
    )
    summary.write(tmp_path)
    text = RunFolder(tmp_path).summary.read_text(encoding="utf-8")
    written = json.loads(text)
    assert list(written) == [
        "run_uid",
        "run_name",
        "status",
        "metrics",
        "errors",
        "server",
        "model",
        "telemetry_notes",
        "warnings",
        "verdict",
        "slo",
    ]
    assert written["server"] == {"kind": "simulated", "url": "http://127.0.0.1:1"} and written["status"] == "FINISHED"
    assert RunSummary.read(tmp_path) == summary
    assert RunSummary.read(tmp_path).to_json() == text


def test_a_summary_from_an_older_or_newer_folder_is_read_and_written_back_whole(tmp_path):
    old = {"metrics": {"ttft_ms_p50": 40, "note": "n/a", "flag": True}, "diagnosis": {"kept": 1}}
    RunFolder(tmp_path).summary.write_text(json.dumps(old), encoding="utf-8")
    summary = RunSummary.read(tmp_path)
    assert summary is not None and summary.status is None and summary.server is None
    assert summary.metrics == {"ttft_ms_p50": 40.0}  # only numbers are metrics
    assert summary.extra == {"diagnosis": {"kept": 1}}
    # Written back as it was: no status it did not have.
    assert json.loads(summary.to_json()) == {"metrics": {"ttft_ms_p50": 40.0}, "diagnosis": {"kept": 1}}
    for broken in ("[1, 2]", '{"metrics": [1]}', '{"status": "WAITING"}', "{"):
        RunFolder(tmp_path).summary.write_text(broken, encoding="utf-8")
        assert RunSummary.read(tmp_path) is None, broken
    assert RunSummary.read(tmp_path / "nowhere") is None


def _folder(path, **kw):
    path.mkdir(parents=True)
    RunJournal(path, _run_file(**kw))
    return path


def test_a_sync_takes_a_sweeps_parent_before_its_jobs_and_each_folder_once(tmp_path):
    sweep = _folder(tmp_path / "multirun" / "d" / "t", uid="sweep1")
    jobs = [_folder(sweep / str(n), parent_uid="sweep1") for n in (1, 0)]
    single = _folder(tmp_path / "outputs" / "d" / "t")
    found = folders_to_sync([tmp_path / "multirun", sweep / "0", tmp_path / "outputs"])
    assert found == [sweep.resolve(), single.resolve(), jobs[1].resolve(), jobs[0].resolve()]
    assert find_sweep_folder(jobs[0], "sweep1") == sweep.resolve()
    assert find_sweep_folder(jobs[0], "another") is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run folder"):
        folders_to_sync([tmp_path / "outputs", tmp_path / "empty"])
    with pytest.raises(UserError, match="is not a folder"):
        folders_to_sync([tmp_path / "nowhere"])


def test_the_sync_exit_status_says_not_logged_before_refused():
    def synced(outcome: int) -> Synced:
        return Synced(None, "FINISHED", "", outcome)  # type: ignore[arg-type]

    assert exit_status([synced(0), synced(0)]) == 0
    assert exit_status([synced(0), synced(UserError.exit_code)]) == 2
    assert exit_status([synced(UserError.exit_code), synced(NotLogged.exit_code)]) == 4
