"""The docs site as a reader gets it: built by mkdocs in strict mode, served over real HTTP on
127.0.0.1, and its home page loaded in a real headless Chromium, which must render the title, the
navigation and the picture. Chromium is Debian's `chromium` package, driven over its DevTools pipe
(scripts/headless_chromium.py). Without it the test is skipped, except in CI, where .ci/run installs
it and the test must run (tests/support/require.py)."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.cli import REPO
from support.require import require

sys.path.insert(0, str(REPO / "scripts"))

from headless_chromium import Chromium, find_chromium

require(find_chromium(), "no Chromium on PATH (apt-get install chromium)")

# The sections and a page of each, as mkdocs.yml's nav names them.
NAV = (
    "Home",
    "Getting started",
    "Install and first run",
    "Guides",
    "Comparing configurations",
    "Troubleshooting",
    "Reference",
    "Configuration reference",
    "Architecture",
    "Development",
)
NAV_LINKS_JS = "[...document.querySelectorAll('nav.md-nav--primary .md-nav__link')].map(a => a.textContent.trim())"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request on stderr would bury a failure's output


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1 and a free port, from a thread of this process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_home_page_renders_its_title_navigation_and_picture(site: Path) -> None:
    with served(site) as base, Chromium() as browser:
        browser.open(base)
        browser.wait_for(f"({NAV_LINKS_JS}).length >= {len(NAV)}", 60, what="the navigation")
        assert browser.evaluate("document.title") == "sentinel-exp"
        assert browser.evaluate("document.querySelector('article h1').firstChild.textContent.trim()") == "sentinel-exp"
        entries = browser.evaluate(NAV_LINKS_JS)
        assert set(NAV) <= set(entries), entries
        # The theme's stylesheet and script came over HTTP too: the header is laid out, not bare HTML.
        assert browser.evaluate("getComputedStyle(document.querySelector('.md-header')).position") == "sticky"
        browser.wait_for(
            "[...document.images].length > 0 && [...document.images].every(i => i.complete && i.naturalWidth > 0)",
            30,
            what="the home page's picture",
        )
        # A link of the navigation leads to its page.
        href = browser.evaluate(
            "[...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')]"
            ".find(a => a.textContent.trim() === 'Comparing configurations').href"
        )
        browser.open(href)
        browser.wait_for("document.title === 'Comparing configurations - sentinel-exp'", 30, what="the comparing page")
        assert "best: keep_alive=-1 (TTFT p95" in browser.text()
