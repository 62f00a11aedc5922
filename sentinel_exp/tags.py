"""Every MLflow tag name sentinel-exp writes or reads, in one place.

A run's tags are how MLflow finds it again (`RUN_UID`, `CONFIG_HASH`, `RUNNER_HOST`) and what a
person filters on in the UI, so a name here is a stored contract: renaming one orphans the runs
logged under the old name. Import the module, not its names: `from sentinel_exp import tags as tag`,
then `tag.RUN_UID`, `tag.choice("options")`.
"""

from __future__ import annotations

PREFIX = "sentinel."

# MLflow's own tag that nests a sweep's job under the sweep's parent run.
PARENT_RUN_ID = "mlflow.parentRunId"
# MLflow's own tag for a run's description, which its UI shows above the run's details.
NOTE = "mlflow.note.content"

# --- what a run is -------------------------------------------------------------------------------
RUN_UID = "sentinel.run_uid"  # the run folder's uid: an upload finds its run again by it
ROLE = "sentinel.role"  # "sweep" on a sweep's parent run (names.Role)
VERSION = "sentinel.version"
OUTPUT_DIR = "sentinel.output_dir"
CONFIG_HASH = "sentinel.config_hash"  # the runs of one configuration share it: an arm's repeats
REPEAT = "sentinel.repeat"
SWEEP_ID = "sentinel.sweep_id"
STUDY_ID = "sentinel.study_id"  # the interleaved study that measured the run, beside its arms
API = "sentinel.api"
SERVER_KIND = "sentinel.server_kind"
SERVER_URL = "sentinel.server_url"
OPTIONS_NOT_SENT = "sentinel.options_not_sent"

# --- what a run found ----------------------------------------------------------------------------
VERDICT = "sentinel.verdict"
FAILURE = "sentinel.failure"  # why a FAILED run failed (run.json's failure)
PLACEMENT = "sentinel.placement"  # names.Placement
SLO = "sentinel.slo"  # pass or fail

# --- a sweep's parent run ------------------------------------------------------------------------
SWEEP_OVERRIDES = "sentinel.sweep_overrides"
OBJECTIVE = "sentinel.objective"
BEST_JOB = "sentinel.best_job"
BEST_WHY = "sentinel.best_why"
NOISE_OF = "sentinel.noise_of"  # on an A/A sweep's parent (sweep=aa): "host|server kind|model"

# --- the doctor's parent run (sweep=diagnose) ----------------------------------------------------
DOCTOR = "sentinel.doctor"  # "true": the parent run of a doctor, not of a sweep
DOCTOR_OF = "sentinel.doctor_of"  # the config hash of the configuration diagnosed: a rerun resumes it
DOCTOR_RESUMED_FROM = "sentinel.doctor_resumed_from"  # the folder of the stopped doctor it resumed

# --- the process that measured it (store/run_folder.Runner) --------------------------------------
RUNNER_PID = "sentinel.runner_pid"
RUNNER_HOST = "sentinel.runner_host"
RUNNER_STARTED = "sentinel.runner_started"
RUNNER_BOOT = "sentinel.runner_boot"

# --- which machines (run/hosts.py) ---------------------------------------------------------------
CLIENT_HOST = "sentinel.client_host"
TARGET_HOST = "sentinel.target_host"
TARGET = "sentinel.target"
TARGET_REMOTE = "sentinel.target_remote"
FINGERPRINT_OF = "sentinel.fingerprint_of"
FINGERPRINT_HOST = "sentinel.fingerprint_host"
RAY_NODE_ID = "sentinel.ray_node_id"  # the Ray node that ran it (hydra/launcher=sentinel_ray)

# --- the model, as the server describes it (clients/facts.py) ------------------------------------
OLLAMA_VERSION = "sentinel.ollama_version"
MODEL_DIGEST = "sentinel.model_digest"
MODEL_FAMILY = "sentinel.model_family"
MODEL_PARAMETER_SIZE = "sentinel.model_parameter_size"
MODEL_QUANTIZATION = "sentinel.model_quantization"
MODEL_SIZE_BYTES = "sentinel.model_size_bytes"

# --- hardware and telemetry ----------------------------------------------------------------------
HARDWARE_PROFILE = "sentinel.hardware_profile"
HARDWARE_MATCH = "sentinel.hardware_match"  # true, false or unchecked
HARDWARE_MESSAGE = "sentinel.hardware_message"
TELEMETRY_SOURCE = "sentinel.telemetry_source"  # names.TelemetrySource
SERVER_PID = "sentinel.server_pid"
GPU_ENERGY_METHOD = "sentinel.gpu_energy_method"
CONTENDED = "sentinel.contended"

# --- the environment fingerprint (telemetry/fingerprint.py) --------------------------------------
GPU_AVAILABLE = "sentinel.gpu_available"
GPU_NAME = "sentinel.gpu_name"
GPU_COUNT = "sentinel.gpu_count"
GPU_VRAM_MB = "sentinel.gpu_vram_mb"
GPU_DRIVER = "sentinel.gpu_driver"
CUDA_DRIVER_VERSION = "sentinel.cuda_driver_version"
GPU_UNAVAILABLE_REASON = "sentinel.gpu_unavailable_reason"
CPU_MODEL = "sentinel.cpu_model"
CPU_CORES_LOGICAL = "sentinel.cpu_cores_logical"
CPU_CORES_PHYSICAL = "sentinel.cpu_cores_physical"
RAM_GB = "sentinel.ram_gb"
OS = "sentinel.os"
PYTHON = "sentinel.python"


# --- families: one tag per key -------------------------------------------------------------------
def choice(group: str) -> str:
    """The option Hydra chose for a config group: `sentinel.choice.options`."""
    return f"sentinel.choice.{group}"


def input_sha256(setting: str) -> str:
    """The digest of a file a setting names: `sentinel.input_sha256.workload.prompts_file`."""
    return f"sentinel.input_sha256.{setting}"


def lint(rule: str) -> str:
    """An option lint finding: `sentinel.lint.num_ctx`."""
    return f"sentinel.lint.{rule}"


def package(distribution: str) -> str:
    """An installed package's version: `sentinel.pkg.httpx`."""
    return f"sentinel.pkg.{distribution}"
