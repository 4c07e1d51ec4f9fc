"""The markdown HTML caches: this process's, and the shared one (Redis) that other web workers fill."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from webapp import markdown

TEXTS = ["**Bold** prompt", "A response with a list:\n\n- one\n- two", "`code` answer"]


@pytest.fixture
def shared_cache(settings: Any) -> Any:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "md-test"}}
    cache.clear()
    markdown._cache.clear()
    yield cache
    cache.clear()
    markdown._cache.clear()


@pytest.fixture
def renders(monkeypatch: Any) -> list[str]:
    done: list[str] = []
    original = markdown._render

    def counted(text: str) -> str:
        done.append(text)
        return original(text)

    monkeypatch.setattr(markdown, "_render", counted)
    return done


def test_prefetched_html_is_what_render_markdown_gives(shared_cache: Any, renders: list[str]) -> None:
    expected = [markdown._render(t) for t in TEXTS]
    renders.clear()
    markdown.prefetch(TEXTS)
    assert sorted(renders) == sorted(TEXTS)
    assert [markdown.render_markdown(t) for t in TEXTS] == expected
    assert len(renders) == len(TEXTS)  # no second rendering


def test_another_worker_finds_the_html_in_the_shared_cache(shared_cache: Any, renders: list[str]) -> None:
    markdown.prefetch(TEXTS)
    markdown._cache.clear()  # another process: nothing of its own
    renders.clear()
    markdown.prefetch(TEXTS)
    assert renders == []
    assert markdown.render_markdown(TEXTS[0]) == markdown._render(TEXTS[0])


def test_a_failing_shared_cache_only_means_rendering_here(shared_cache: Any, renders: list[str], monkeypatch: Any):
    class Down:
        def get_many(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("redis is down")

        set_many = get_many

    monkeypatch.setattr("django.core.cache.cache", Down())
    markdown.prefetch(TEXTS)
    assert sorted(renders) == sorted(TEXTS)
    assert markdown.render_markdown(TEXTS[1]).startswith("<p>A response")


def test_long_texts_are_neither_cached_nor_prefetched(shared_cache: Any, renders: list[str]) -> None:
    long = "word " * 5000
    markdown.prefetch([long])
    assert renders == []
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
