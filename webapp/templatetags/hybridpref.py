from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from webapp.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    # Safe to mark: render_markdown sanitizes with an allow-list.
    return mark_safe(render_markdown(text))  # noqa: S308


def _values(values: Any, key: str) -> list[str]:
    if hasattr(values, "getlist"):
        return [str(v) for v in values.getlist(key)]
    raw = values.get(key) if isinstance(values, dict) else None
    if raw is None:
        return []
    return [str(v) for v in raw] if isinstance(raw, list | tuple) else [str(raw)]


@register.filter
def val(values: Any, key: str) -> str:
    """The first submitted value of a form field (QueryDict or dict), or ''."""
    found = _values(values, key)
    return found[0] if found else ""


@register.filter
def vals(values: Any, key: str) -> list[str]:
    """All submitted values of a repeated form field."""
    return _values(values, key)


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key, "") if hasattr(mapping, "get") else ""
