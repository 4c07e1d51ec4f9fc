"""Shared fixtures. The suite runs on PostgreSQL and Redis (see `make test`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from webapp.models import Membership, Project

DATA = Path(__file__).resolve().parent / "data"
PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"


@pytest.fixture
def project(db: None) -> Project:
    return ProjectFactory(slug="prefs", name="Prefs")


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """Write rows (dicts, or raw strings/bytes written as they are) to a .jsonl file."""

    def write(rows: list[Any], name: str = "items.jsonl") -> Path:
        path = tmp_path / name
        with path.open("wb") as fh:
            for row in rows:
                if isinstance(row, bytes):
                    fh.write(row + b"\n")
                elif isinstance(row, str):
                    fh.write(row.encode() + b"\n")
                else:
                    fh.write(json.dumps(row).encode() + b"\n")
        return path

    return write


@pytest.fixture
def manager(project: Project) -> Any:
    user = UserFactory(username="manager1")
    MembershipFactory(project=project, user=user, role=Membership.MANAGER)
    return user


@pytest.fixture
def annotator(project: Project) -> Any:
    user = UserFactory(username="annotator1")
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    return user


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through chromedriver (make test installs both; nothing is downloaded)."""
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1400")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
