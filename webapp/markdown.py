"""Markdown to safe HTML. Imported text can never run script or load remote content."""

from __future__ import annotations

import functools
import threading

import markdown as md
import nh3

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "u", "s", "del",
    "blockquote", "code", "pre", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
    "sup", "sub", "dl", "dt", "dd",
}  # fmt: skip
# No img, iframe, style or on* attributes: nothing that fetches or executes.
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "span": {"class"}, "th": {"align"}, "td": {"align"}}


_local = threading.local()


def _converter() -> md.Markdown:
    # A Markdown instance is costly to build (its extensions) and not thread-safe: one per thread, reset per use.
    converter: md.Markdown | None = getattr(_local, "converter", None)
    if converter is None:
        converter = _local.converter = md.Markdown(
            extensions=["fenced_code", "tables", "sane_lists"], output_format="html"
        )
    return converter.reset()


# The same prompt, response or guidelines is shown to several annotators, and pages are reloaded: the
# HTML of texts up to this size is kept (per process, the most recent 512: some 20 MB at worst).
_CACHE_MAX_CHARS = 16_000


def render_markdown(text: str) -> str:
    text = text or ""
    return _render_cached(text) if len(text) <= _CACHE_MAX_CHARS else _render(text)


@functools.lru_cache(maxsize=512)
def _render_cached(text: str) -> str:
    return _render(text)


def _render(text: str) -> str:
    html = _converter().convert(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
