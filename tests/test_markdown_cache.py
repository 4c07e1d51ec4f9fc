"""Markdown rendering: what it renders, and this process's cache of the HTML."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from webapp import markdown

TEXTS = ["**Bold** prompt", "A response with a list:\n\n- one\n- two", "`code` answer"]


@pytest.fixture
def renders(monkeypatch: Any) -> Iterator[list[str]]:
    done: list[str] = []
    original = markdown._render

    def counted(text: str) -> str:
        done.append(text)
        return original(text)

    monkeypatch.setattr(markdown, "_render", counted)
    markdown._cache.clear()
    yield done
    markdown._cache.clear()


def test_each_text_is_rendered_once_and_then_served_from_the_cache(renders: list[str]) -> None:
    first = [markdown.render_markdown(t) for t in TEXTS]
    second = [markdown.render_markdown(t) for t in TEXTS]
    assert first == second
    assert renders == TEXTS


def test_long_texts_are_not_cached(renders: list[str]) -> None:
    long = "word " * 5000
    markdown.render_markdown(long)
    markdown.render_markdown(long)
    assert renders == [long, long]


def test_the_process_cache_keeps_the_most_recent_texts() -> None:
    lru = markdown._LRU(2)
    lru.put("a", "A")
    lru.put("b", "B")
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("c", "C")
    assert lru.get("b") is None
    assert (lru.get("a"), lru.get("c")) == ("A", "C")


def test_github_flavoured_markdown_is_rendered() -> None:
    html = markdown.render_markdown(
        "# Title\n\n| a | b |\n|---|:-:|\n| 1 | 2 |\n\n```python\nx = 1 < 2\n```\n\n- one\n- two\n\n~~old~~ **new**"
    )
    assert "<h1>Title</h1>" in html
    assert '<th align="center">b</th>' in html
    assert '<code class="language-python">x = 1 &lt; 2\n</code>' in html
    assert "<li>one</li>" in html
    assert "<del>old</del> <strong>new</strong>" in html


def test_allowed_raw_html_is_kept_and_the_rest_removed() -> None:
    html = markdown.render_markdown('Some <b>bold</b> text <img src="http://x/y.png"> and <span onclick="f()">z</span>')
    assert "<b>bold</b>" in html
    assert "<img" not in html
    assert "onclick" not in html
    assert "<span>z</span>" in html


def test_links_get_no_opener_and_unsafe_schemes_are_dropped() -> None:
    html = markdown.render_markdown("[ok](https://example.org) [bad](javascript:alert(1)) www.example.com")
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "javascript:" not in html
    assert 'href="http://www.example.com"' in html
