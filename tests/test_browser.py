"""A real headless browser against a live server: what a new user sees after `make demo`."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from webapp.services.demo import setup_demo

pytestmark = pytest.mark.skipif(shutil.which("chromedriver") is None, reason="make test installs chromium-driver")


@pytest.mark.django_db(transaction=True)
def test_a_manager_logs_in_and_browses_the_demo_project(live_server: Any, browser: Any) -> None:
    _, _, logins = setup_demo()
    username, password, _ = next(login for login in logins if login[0] == "manager")

    browser.get(live_server.url + "/")
    assert "/login/" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    browser.find_element(By.LINK_TEXT, "PandaLM demo (999 real pairs)").click()
    assert "999 items" in browser.find_element(By.ID, "items").text

    # pandalm-99 and pandalm-990..998. Typing in the search box swaps the table in place through htmx,
    # without a page load.
    marker = browser.execute_script("window.__stay = 1; return window.__stay;")
    browser.find_element(By.NAME, "q").send_keys("pandalm-99")
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "items"), "10 items"))
    assert browser.execute_script("return window.__stay;") == marker
    assert "q=pandalm-99" in browser.current_url

    browser.find_element(By.LINK_TEXT, "pandalm-99").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Item pandalm-99"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".response")) == 2
    assert "pandalm-annotator1" in browser.page_source
