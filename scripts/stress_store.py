"""Several processes logging to one MLflow store at once: does anything get lost?

Each of N processes opens the store through sentinel-exp's Tracker at the same moment (a new
sqlite store: its tables and experiment made by the first) and logs one run as a run's upload
does: tags at creation, params, metrics, a telemetry series in batches, an artifact, the end. Then
every run is read back and counted.

    python scripts/stress_store.py --processes 12                      # a new sqlite store
    python scripts/stress_store.py --uri http://127.0.0.1:5000         # a tracking server
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path

try:
    import sentinel_exp  # noqa: F401
except ImportError:  # run from a checkout without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARAMS = 120
SERIES_POINTS = 3000  # as a 5-minute run's telemetry at 10 Hz, several series


def log_one(uri: str, experiment: str, index: int, start_at: float, out: Path) -> str:
    from sentinel_exp.store.tracking import Tracker

    time.sleep(max(0.0, start_at - time.time()))  # all processes open the store together
    tracker = Tracker(uri, experiment)
    uid = uuid.uuid4().hex
    tracker.start(f"stress {index}", {"sentinel.run_uid": uid, "stress.index": str(index)})
    tracker.log_params({f"p{i}": i for i in range(PARAMS)})
    tracker.log_metrics({"ttft_ms_p50": float(index), "requests_ok": 100.0})
    now = int(time.time() * 1000)
    tracker.log_series((f"series_{i % 3}", float(i), now + i, i // 3) for i in range(SERIES_POINTS))
    artifact = out / f"requests_{index}.jsonl"
    artifact.write_text("".join(f'{{"i": {i}}}\n' for i in range(100)), encoding="utf-8")
    tracker.log_artifact(artifact)
    tracker.end("FINISHED")
    return uid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=12)
    parser.add_argument("--uri", help="the store (default: a new sqlite store in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        uri = args.uri or f"sqlite:///{out / 'mlflow.db'}"
        experiment = f"stress-{uuid.uuid4().hex[:8]}"
        start_at = time.time() + 3.0  # time for every process to import MLflow first
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            jobs = [pool.apply_async(log_one, (uri, experiment, i, start_at, out)) for i in range(args.processes)]
            uids, failures = [], []
            for job in jobs:
                try:
                    uids.append(job.get(timeout=600))
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - started
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
        complete = 0
        for run in runs:
            points = sum(len(client.get_metric_history(run.info.run_id, f"series_{k}")) for k in range(3))
            artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
            complete += (
                run.info.status == "FINISHED"
                and len(run.data.params) == PARAMS
                and points == SERIES_POINTS
                and len(artifacts) == 1
            )
        print(
            f"{args.processes} processes, {elapsed:.1f} s: {len(runs)} runs in the store, {complete} complete "
            f"({PARAMS} params, {SERIES_POINTS} series points, 1 artifact, FINISHED), {len(failures)} failed"
        )
        for failure in failures:
            print("  " + failure.splitlines()[0])
        return 0 if complete == args.processes and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
