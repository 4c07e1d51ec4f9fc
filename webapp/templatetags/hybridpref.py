from django import template
from django.utils.safestring import SafeString, mark_safe

from webapp.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    # Safe to mark: render_markdown sanitizes with an allow-list.
    return mark_safe(render_markdown(text))  # noqa: S308
