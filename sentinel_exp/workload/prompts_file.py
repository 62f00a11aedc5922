"""Prompt sets read from a file (`workload.prompts_file`).

- `.jsonl`: one JSON object a line, either `{"prompt": "..."}` or `{"messages": [{"role": ..., "content": ...}, ...]}`
  (a chat conversation, sent as given to /api/chat and /v1/chat/completions);
- anything else: plain text, one prompt a line.

Blank lines are skipped. A relative path is looked up in the working directory, then in the sets
shipped with the package (sentinel_exp/data/, e.g. `prompts/chat_turns.jsonl`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel_exp.errors import ConfigError

BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data"
# Shown in an error: the first few bad lines, not hundreds.
MAX_LINE_PROBLEMS = 5


@dataclass(frozen=True)
class Prompt:
    """What one request asks: a text prompt, or a chat conversation (`messages`, text None)."""

    text: str | None = None
    messages: list[dict[str, Any]] | None = field(default=None, hash=False)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def resolve_prompts_path(path: str) -> Path:
    """The file `path` names: as given when absolute or present from the working directory,
    else the shipped set of that name; ConfigError when neither exists."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        if not given.is_file():
            raise ConfigError(f"workload.prompts_file: {path} is not a file")
        return given
    bundled = BUNDLED_DATA / given
    if bundled.is_file():
        return bundled
    shipped = sorted(str(p.relative_to(BUNDLED_DATA)) for p in BUNDLED_DATA.rglob("*") if p.is_file())
    raise ConfigError(
        f"workload.prompts_file: no file {path} (from {Path.cwd()}); shipped sets: {', '.join(shipped) or 'none'}"
    )


def _read_prompts_bytes(path: str) -> tuple[Path, bytes]:
    resolved = resolve_prompts_path(path)
    try:
        return resolved, resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"workload.prompts_file: cannot read {resolved}: {exc}") from None


def prompts_file_digest(path: str) -> str:
    """The content's identity (sha256, 16 hex digits): a run is known by what it sent, so an
    edited prompt set under the same name is a new configuration."""
    _, content = _read_prompts_bytes(path)
    return hashlib.sha256(content).hexdigest()[:16]


def read_prompts_file(path: str) -> list[Prompt]:
    """The prompts of the file `path` names; ConfigError naming the file and line of each mistake."""
    resolved, content = _read_prompts_bytes(path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"workload.prompts_file: cannot read {resolved}: {exc}") from None
    return parse_prompt_lines(text.splitlines(), str(resolved), jsonl=resolved.suffix.lower() == ".jsonl")


def parse_prompt_lines(lines: Iterable[str], name: str, jsonl: bool) -> list[Prompt]:
    """Prompts from the lines of file `name`; ConfigError listing the bad lines as `name:line: why`."""
    prompts: list[Prompt] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(Prompt(text=line.strip()))
            continue
        try:
            prompts.append(_jsonl_prompt(line))
        except ValueError as exc:
            problems.append(f"{name}:{number}: {exc}")
    if problems:
        more = len(problems) - MAX_LINE_PROBLEMS
        shown = problems[:MAX_LINE_PROBLEMS] + ([f"and {more} more bad lines"] if more > 0 else [])
        raise ConfigError("workload.prompts_file: " + "; ".join(shown))
    if not prompts:
        raise ConfigError(f"workload.prompts_file: {name} holds no prompt")
    return prompts


def _jsonl_prompt(line: str) -> Prompt:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(entry, dict) or ("prompt" in entry) == ("messages" in entry):
        raise ValueError('each line must be an object with either "prompt" (a string) or "messages" (a list)')
    if "prompt" in entry:
        prompt = entry["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f'"prompt" must be a non-empty string (got {prompt!r})')
        return Prompt(text=prompt)
    messages = entry["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list of {"role": ..., "content": ...}')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f'messages[{i}] must be an object with a string "role"')
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}].content must be a string (got {message.get('content')!r})")
    return Prompt(messages=messages)
