"""Every relative link and image of README.md resolves, anchors included, and the README links
every page of the docs site. The site's own links are checked by `mkdocs build --strict` (its
validation settings in mkdocs.yml make a missing page or anchor an error)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.M)


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links are links."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation out, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = github_slug(heading)
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(markdown: str) -> list[str]:
    return [target for target in LINK.findall(prose(markdown)) if not urlsplit(target).scheme]


def test_slugs_follow_githubs_rule() -> None:
    assert github_slug("Which change helps?") == "which-change-helps"
    assert github_slug("The run folder comes first; MLflow is an upload of it") == (
        "the-run-folder-comes-first-mlflow-is-an-upload-of-it"
    )
    assert github_slug("`server.sim` and *friends*") == "serversim-and-friends"
    assert anchors("# A\n\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_links_are_found_outside_code_only() -> None:
    text = '[a](docs/a.md) ![b](img/b.png "t") `[c](no.md)` [d](https://x.org)\n```\n[e](no.md)\n```\n'
    assert relative_links(text) == ["docs/a.md", "img/b.png"]


@pytest.mark.parametrize("target", relative_links(README.read_text(encoding="utf-8")))
def test_every_relative_link_of_the_readme_resolves(target: str) -> None:
    parts = urlsplit(target)
    path = (README.parent / unquote(parts.path)).resolve() if parts.path else README
    assert path.exists(), f"README.md links {target}: no {path.relative_to(REPO)}"
    assert REPO in path.parents or path == REPO, f"README.md links {target}, outside the repository"
    if parts.fragment:
        assert path.suffix == ".md", f"README.md links {target}: an anchor into a file that is not markdown"
        found = anchors(path.read_text(encoding="utf-8"))
        assert parts.fragment in found, f"README.md links {target}: no such heading in {path.name}"


def test_the_readme_links_every_page_of_the_site() -> None:
    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [page for item in nav for page in pages(item)]
        if isinstance(nav, dict):
            return [page for value in nav.values() for page in pages(value)]
        return []

    nav = pages(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert len(nav) >= 15
    linked = {urlsplit(t).path for t in relative_links(README.read_text(encoding="utf-8"))}
    missing = [page for page in nav if f"docs/{page}" not in linked]
    assert not missing, f"README.md does not link these pages of the site: {missing}"
