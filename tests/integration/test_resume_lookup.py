"""Which earlier run a sweep job may stand in for: the latest FINISHED run of its config hash and
repeat, in a real MLflow sqlite store."""

import json

from sentinel_exp.store.tracking import Tracker


def _run(tracker: Tracker, tags: dict[str, str], status: str, summary_metrics: dict[str, float] | None, tmp_path):
    run_id = tracker.start("r", tags)
    tracker.log_metrics({"ttft_ms_p50": 50.0, "cpu_pct": 3.0})
    if summary_metrics is not None:
        path = tmp_path / f"{run_id}" / "summary.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"run_id": run_id, "metrics": summary_metrics}))
        tracker.log_artifact(path)
    tracker.end(status)
    return run_id


def test_only_a_finished_run_of_the_same_hash_and_repeat_is_reused(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    same = {"sentinel.config_hash": "abc"}
    killed = _run(tracker, {**same, "sentinel.repeat": "0"}, "KILLED", {"ttft_ms_p50": 1.0}, tmp_path)
    other = _run(tracker, {"sentinel.config_hash": "xyz", "sentinel.repeat": "0"}, "FINISHED", None, tmp_path)
    done = _run(tracker, {**same, "sentinel.repeat": "0"}, "FINISHED", {"ttft_ms_p50": 41.0}, tmp_path)
    second = _run(tracker, {**same, "sentinel.repeat": "1"}, "FINISHED", None, tmp_path)
    untagged = _run(tracker, {"sentinel.config_hash": "old"}, "FINISHED", None, tmp_path)

    found = tracker.finished_run("abc", 0)
    assert found is not None and found.run_id == done and found.run_id not in (killed, other)
    # The summary's exact metrics, not MLflow's latest values of every key.
    assert found.metrics == {"ttft_ms_p50": 41.0}
    repeat1 = tracker.finished_run("abc", 1)
    assert repeat1 is not None and repeat1.run_id == second
    assert repeat1.metrics == {"ttft_ms_p50": 50.0, "cpu_pct": 3.0}  # no summary artifact: the logged metrics
    assert tracker.finished_run("abc", 2) is None
    assert tracker.finished_run("nope", 0) is None
    # A run from before repeats were tagged is repeat 0.
    assert tracker.finished_run("old", 0).run_id == untagged and tracker.finished_run("old", 1) is None
