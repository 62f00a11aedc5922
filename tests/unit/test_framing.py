"""Push-based framing of streamed bodies: NDJSON lines and SSE event data, a piece at a time."""

from __future__ import annotations

import pytest

from sentinel_exp.clients.framing import NdjsonLines, SseEvents


def pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def sse_all(body: bytes, size: int) -> list[str]:
    framer = SseEvents()
    events = [e for piece in pieces(body, size) for e in framer.feed(piece)]
    return events + framer.flush()


def ndjson_all(body: bytes, size: int) -> list[bytes]:
    framer = NdjsonLines()
    lines = [line for piece in pieces(body, size) for line in framer.feed(piece)]
    return lines + framer.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_ndjson_lines_come_out_whole_wherever_the_body_is_cut(size: int) -> None:
    body = b'{"a": 1}\n\n{"b": "x y"}\n  \n{"c": 3}'
    assert ndjson_all(body, size) == [b'{"a": 1}', b'{"b": "x y"}', b'{"c": 3}']


def test_an_ndjson_line_is_out_as_soon_as_its_newline_arrives() -> None:
    framer = NdjsonLines()
    assert framer.feed(b'{"a": 1}') == []
    assert framer.feed(b'\n{"b"') == [b'{"a": 1}']
    assert framer.flush() == [b'{"b"']


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_events_are_the_same_for_every_line_ending_and_every_cut(size: int, newline: bytes) -> None:
    lines = [b"data: one", b"", b": a comment", b"event: ping", b"", b"data:two", b"data:  three", b""]
    lines += [b"data: [DONE]", b""]
    body = newline.join(lines) + newline
    # "event: ping" alone has no data: nothing to dispatch; one leading space is stripped, no more.
    assert sse_all(body, size) == ["one", "two\n three", "[DONE]"]


def test_an_sse_event_waits_for_its_blank_line_and_a_cr_for_what_follows_it() -> None:
    framer = SseEvents()
    assert framer.feed(b"data: a\r") == []
    assert framer.feed(b"\n\r") == []  # \r\n ended the line; the lone \r may still be half of a \r\n
    assert framer.feed(b"\n") == ["a"]


def test_an_sse_event_cut_off_by_the_end_of_the_body_is_dropped() -> None:
    framer = SseEvents()
    assert framer.feed(b"data: complete\n\ndata: partial") == ["complete"]
    assert framer.flush() == []


def test_sse_data_that_is_not_utf8_is_replaced_not_fatal() -> None:
    assert sse_all(b"data: \xff\xfeok\n\n", 3) == ["\ufffd\ufffdok"]
