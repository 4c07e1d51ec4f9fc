"""The templates themselves: what Django would print as text instead of reading as template syntax."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "webapp" / "templates"


def test_there_are_templates_to_check() -> None:
    assert len(list(TEMPLATES.rglob("*.html"))) > 10


def test_no_template_has_a_comment_tag_spanning_lines() -> None:
    # Django's {# ... #} ends at the end of its line; longer comments need {% comment %}.
    broken = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for opening in re.finditer(r"\{#", line):
                if "#}" not in line[opening.end() :]:
                    broken.append(f"{path.relative_to(TEMPLATES)}:{number}")
    assert not broken, f"multi-line {{# comments (shown on the page): {broken}"


def test_every_page_names_its_icon_so_browsers_do_not_ask_for_a_missing_favicon(client) -> None:
    from django.contrib.staticfiles import finders

    page = client.get("/login/").content.decode()
    assert '<link rel="icon" href="/static/webapp/favicon.svg" type="image/svg+xml">' in page
    icon = finders.find("webapp/favicon.svg")
    assert icon is not None
    assert Path(icon).read_text().startswith("<svg")
