"""Stream framing pushed a piece at a time: NDJSON lines and server-sent events out of body bytes.

The loopback client (http1.py) parses the body inside the connection's `data_received`, where the
arrival stamp is taken, so framing is push-based: each call gets the bytes that just arrived and
returns the frames they completed. Both wires send one token per frame, and a frame is stamped with
the arrival of the bytes that completed it. Pure: no I/O, no clock.
"""

from __future__ import annotations

from enum import StrEnum


class Framing(StrEnum):
    NDJSON = "ndjson"  # one JSON object a line (Ollama)
    SSE = "sse"  # server-sent events, one JSON object in each event's data (OpenAI)


class NdjsonLines:
    """Lines split at \\n; blank lines dropped. A JSON text never holds a raw newline, so a \\n
    always ends a line."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._pending += data
            return []
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [line for line in lines if line.strip()]

    def flush(self) -> list[bytes]:
        """The last line, complete once the body has ended even without its newline."""
        line, self._pending = self._pending, b""
        return [line] if line.strip() else []


class SseEvents:
    """The data of each complete event, as the SSE specification reads a stream: lines end at
    \\r\\n, \\r or \\n; a blank line ends an event; `data:` fields join with \\n; comments (`:`)
    and other fields are ignored, and an event with no data field yields nothing (its `event:` or
    `id:` alone carries no token). Bytes that are not UTF-8 become U+FFFD, as a text decoder would."""

    __slots__ = ("_data", "_has_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._has_data = False

    def feed(self, data: bytes) -> list[str]:
        buffer = self._pending + data
        if b"\r" in buffer:
            # A \r at the very end may be the first half of a \r\n: keep it for the next piece.
            keep_cr = buffer.endswith(b"\r")
            if keep_cr:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *lines, rest = buffer.split(b"\n")
            self._pending = rest + b"\r" if keep_cr else rest
        else:
            *lines, self._pending = buffer.split(b"\n")
        events: list[str] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[str]:
        """At the end of the body: an event not ended by a blank line is incomplete and dropped."""
        events: list[str] = []
        if self._pending:
            self._line(self._pending.rstrip(b"\r"), events)
            self._pending = b""
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if not line:
            if self._has_data:
                events.append("\n".join(self._data))
            self._data, self._has_data = [], False
            return
        if line[:1] == b":":
            return
        name, _, value = line.partition(b":")
        if name == b"data":
            text = value.decode("utf-8", "replace")
            self._data.append(text[1:] if text.startswith(" ") else text)
            self._has_data = True
