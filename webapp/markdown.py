"""Markdown to safe HTML. Imported text can never run script or load remote content."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

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
log = logging.getLogger(__name__)


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
_CACHE_SIZE = 512
# With a shared cache (Redis: see settings.CACHES), the HTML is also kept there for a short while: an item's
# second annotator often lands on another web worker than its first, and finds it rendered there. Short:
# the queue hands an item to its next annotator right after its first claim (most-filled first), and the
# HTML of a busy queue adds up (some 6 KB an item: at 100 new items a second, 18 MB).
SHARED_TIMEOUT_S = 30
_SHARED_PREFIX = "md1:"


class _LRU:
    """A small least-recently-used map (thread-safe): text -> HTML."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_cache = _LRU(_CACHE_SIZE)


def render_markdown(text: str) -> str:
    text = text or ""
    if len(text) > _CACHE_MAX_CHARS:
        return _render(text)
    html = _cache.get(text)
    if html is None:
        html = _render(text)
        _cache.put(text, html)
    return html


def _shared_key(text: str) -> str:
    return _SHARED_PREFIX + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def prefetch(texts: Iterable[str]) -> None:
    """Make render_markdown's HTML of these texts ready: from this process's cache, else from the shared cache
    (one round trip for them all), else rendered here and put in both. Without a shared cache, or when it
    fails, the texts are rendered here as render_markdown would."""
    from django.core.cache import cache  # webapp.markdown stays importable without Django settings

    missing = [t for t in dict.fromkeys(t or "" for t in texts) if len(t) <= _CACHE_MAX_CHARS and _cache.get(t) is None]
    if not missing:
        return
    keys = {_shared_key(t): t for t in missing}
    try:
        found, shared = cache.get_many(list(keys)), True
    except Exception:  # the shared cache is down: render here
        log.warning("markdown: the shared cache failed", exc_info=True)
        found, shared = {}, False
    rendered = {}
    for key, text in keys.items():
        html = found.get(key)
        if not isinstance(html, str):
            html = rendered[key] = _render(text)
        _cache.put(text, html)
    if rendered and shared:
        try:
            cache.set_many(rendered, timeout=SHARED_TIMEOUT_S)
        except Exception:
            log.warning("markdown: the shared cache failed", exc_info=True)


def _render(text: str) -> str:
    html = _converter().convert(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
