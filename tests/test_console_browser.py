"""The manager console in a real headless chromium: create a project, upload PandaLM, import it, add an annotator.

Screenshots of each page go to test-artifacts/console-*.png (as the annotation browser tests do).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import Resolver404, resolve
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import PANDALM
from tests.factories import UserFactory
from webapp.models import AnnotatorProfile, ImportJob, Item, Membership, Project
from webapp.services.imports import run_import_job

pytestmark = [
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="make test installs chromium-driver"),
    pytest.mark.django_db(transaction=True),
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct-horse-battery"
SLUG = "pandalm-console"


@pytest.fixture(autouse=True)
def _settings(settings: Any, tmp_path: Path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.UPLOAD_DIR = tmp_path / "uploads"


def screenshot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))


def wait(browser: Any, condition: Any, timeout: float = 10) -> Any:
    return WebDriverWait(browser, timeout).until(condition)


def url_exists(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def test_a_manager_creates_a_project_uploads_pandalm_imports_it_and_adds_an_annotator(
    live_server: Any, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A manager who may create projects: staff with the add_project permission (selectors.may_create_projects).
    boss = UserFactory(username="boss", password=PASSWORD, is_staff=True)
    boss.user_permissions.add(Permission.objects.get(codename="add_project"))
    queued: list[int] = []

    class Task:  # the Celery task, as the worker would get it: run below, as the worker would run it
        @staticmethod
        def delay(job_id: int) -> None:
            queued.append(job_id)

    monkeypatch.setattr("webapp.tasks.run_import", Task)

    browser.get(f"{live_server.url}/login/?next=/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    browser.find_element(By.LINK_TEXT, "New project").click()

    # 1. The new project's scheme; the preview follows the form without a page load.
    assert browser.find_element(By.TAG_NAME, "h1").text == "New project"
    marker = browser.execute_script("window.__stay = 1; return window.__stay;")
    browser.find_element(By.NAME, "name").send_keys("PandaLM console")
    browser.find_element(By.NAME, "slug").send_keys(SLUG)
    aspects = browser.find_element(By.NAME, "aspects")
    aspects.clear()
    aspects.send_keys("overall")
    browser.find_element(By.NAME, "justification_required").click()
    minimum = browser.find_element(By.NAME, "justification_min_length")
    minimum.clear()
    minimum.send_keys("10")
    browser.find_element(By.NAME, "guidelines").send_keys("Which response follows the **instruction** better?")
    overlap = browser.find_element(By.NAME, "overlap_normal")
    overlap.clear()
    overlap.send_keys("1")
    cost = browser.find_element(By.NAME, "cost_per_human_annotation")
    cost.clear()
    cost.send_keys("0.40")
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, '#preview fieldset[data-aspect="helpful"]'))
    wait(browser, ec.text_to_be_present_in_element((By.ID, "preview"), "(required, at least 10 characters)"))
    preview = browser.find_element(By.ID, "preview")
    assert preview.find_elements(By.CSS_SELECTOR, 'fieldset[data-aspect="overall"]')
    assert "A is clearly better" in preview.text
    assert browser.execute_script("return window.__stay;") == marker  # htmx swapped the preview in place
    screenshot(browser, "1-new-project")
    browser.find_element(By.CSS_SELECTOR, "#project-form button.primary").click()

    # 2. Created as a draft; open it for annotation.
    wait(browser, ec.url_contains(f"/p/{SLUG}/edit/"))
    assert "created as a draft" in browser.find_element(By.CLASS_NAME, "messages").text
    project = Project.objects.get(slug=SLUG)
    assert project.aspects == ["overall"]
    assert Membership.objects.filter(project=project, user=boss, role=Membership.MANAGER).exists()
    browser.find_element(By.XPATH, "//button[normalize-space()='Open for annotation']").click()
    wait(browser, ec.text_to_be_present_in_element((By.CLASS_NAME, "messages"), "open for annotation"))
    screenshot(browser, "2-edit-project")

    # 3. Upload the PandaLM file: a validation report, nothing written yet.
    browser.find_element(By.LINK_TEXT, "Upload items").click()
    Select(browser.find_element(By.NAME, "format")).select_by_value("pandalm")
    browser.find_element(By.NAME, "file").send_keys(str(PANDALM))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait(browser, ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Validation report"))
    assert browser.find_element(By.ID, "rows").text == "999"
    assert browser.find_element(By.ID, "rows-ok").text == "999"
    assert browser.find_element(By.ID, "error-total").text == "0"
    assert browser.find_element(By.ID, "new").text == "999"
    assert browser.find_element(By.ID, "responses").text == "2 responses: 999"
    assert not Item.objects.filter(project=project).exists()
    screenshot(browser, "3-validation-report")

    # 4. Import: queued for a worker; the jobs table follows it until it is done.
    browser.find_element(By.ID, "import-button").click()
    wait(browser, ec.url_to_be(f"{live_server.url}/p/{SLUG}/upload/"))
    assert "Importing 999 item(s)" in browser.find_element(By.CLASS_NAME, "messages").text
    assert len(queued) == 1
    assert "queued" in browser.find_element(By.ID, f"import-{queued[0]}").text
    run_import_job(queued[0])  # what the worker's task does
    wait(browser, ec.text_to_be_present_in_element((By.ID, f"import-{queued[0]}"), "done"))
    assert ImportJob.objects.get(pk=queued[0]).created == 999
    assert Item.objects.filter(project=project).count() == 999
    screenshot(browser, "4-imported")

    # 5. People: a new annotator in the project, with a generated password shown once.
    browser.get(f"{live_server.url}/p/{SLUG}/")
    browser.find_element(By.LINK_TEXT, "People").click()
    form = browser.find_element(By.ID, "new-person")
    form.find_element(By.NAME, "username").send_keys("alice")
    form.find_element(By.NAME, "email").send_keys("alice@example.org")
    Select(form.find_element(By.NAME, "tier")).select_by_value("expert")
    form.find_element(By.NAME, "domains").send_keys("linguistics, editing")
    Select(form.find_element(By.NAME, "project")).select_by_value(SLUG)
    form.find_element(By.NAME, "quota").send_keys("50")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    password = browser.find_element(By.ID, "new-password").text
    assert len(password) >= 12
    alice = AnnotatorProfile.objects.select_related("user").get(user__username="alice")
    assert (alice.tier, alice.domains) == ("expert", ["linguistics", "editing"])
    assert Membership.objects.get(user=alice.user, project=project).quota == 50
    screenshot(browser, "5-annotator-created")
    browser.find_element(By.LINK_TEXT, "Open alice").click()
    assert "alice" in browser.find_element(By.TAG_NAME, "h1").text
    screenshot(browser, "6-person")

    # 6. The quality and costs pages (another part of the console), where this tree has them.
    for page in ("quality", "costs"):
        path = f"/p/{SLUG}/{page}/"
        if not url_exists(path):
            continue
        browser.get(live_server.url + path)
        assert "Server Error" not in browser.page_source
        assert browser.find_element(By.TAG_NAME, "h1").text
        screenshot(browser, f"7-{page}")
