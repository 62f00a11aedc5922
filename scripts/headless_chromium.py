"""Headless Chromium driven over the DevTools protocol on a pipe: no driver, no websocket, no download.

`chromium --remote-debugging-pipe` reads protocol commands on fd 3 and writes replies and events
on fd 4, each message JSON ended by a NUL byte. That is all a test needs to open a page, run
JavaScript in it, wait for what it renders and take a screenshot, with the browser Debian ships
(`apt-get install chromium`) and nothing from PyPI.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

# JSON from the protocol: its shape is the protocol's, checked by the caller that reads a field.
Json = dict[str, Any]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser died, answered with an error, or a wait ran out."""


class Chromium:
    """One headless browser with one page; a context manager that always ends the browser."""

    def __init__(self, width: int = 1600, height: int = 1000, binary: str | None = None) -> None:
        exe = binary or find_chromium()
        if exe is None:
            raise BrowserError(f"no Chromium on PATH (looked for {', '.join(CANDIDATES)})")
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:
            # Above 10 first, so that placing them on 3 and 4 cannot close one of them.
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--disable-dev-shm-usage",  # small /dev/shm in containers
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,  # only moves fds: safe after fork, takes no lock
            pass_fds=(3, 4),  # kept past close_fds; open here (the pipes above take them if nothing else does)
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._closed = False
        try:
            target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable")
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _send(self, message: Json) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]

    def _receive(self, deadline: float) -> Json:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (code {self._proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        reply: Json = json.loads(message)
        return reply

    def _call(self, method: str, params: Json | None = None, session: str | None = None, timeout_s: float = 30) -> Json:
        self._next_id += 1
        message: Json = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self._next_id:
                continue  # an event, or the reply to a call that timed out before
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error'].get('message')}")
            result: Json = reply.get("result", {})
            return result

    def call(self, method: str, params: Json | None = None, timeout_s: float = 30) -> Json:
        """One protocol command on the page (https://chromedevtools.github.io/devtools-protocol/)."""
        return self._call(method, params, self._session, timeout_s)

    def open(self, url: str) -> None:
        reply = self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")

    # Any: whatever the page's JavaScript returns, as JSON.
    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}: {details.get('exception', {}).get('description') or details}")
        return reply.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value. A single-page app renders late."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"waited {timeout_s:.0f} s for {what or expression}")
            time.sleep(0.25)

    def text(self) -> str:
        """The page's visible text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def resize(self, width: int, height: int) -> None:
        """The page's viewport, as a window of this size would give it."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            try:
                self._call("Browser.close", timeout_s=5)
            except (BrowserError, OSError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()
