"""`manage.py create_judge` and `manage.py judge` (inline here; on a worker in test_celery_worker)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.factories import ItemFactory, ProjectFactory
from tests.fake_openai import FakeOpenAI
from webapp.models import Judge, JudgeRun, Judgment

pytestmark = pytest.mark.django_db


def _call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_judge_makes_each_kind_of_judge(tmp_path):
    _call(
        "create_judge",
        "gpt",
        "--backend",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--price-prompt",
        "0.15",
        "--price-completion",
        "0.6",
        "--rpm",
        "100",
        "--tpm",
        "90000",
    )
    _call("create_judge", "rm", "--backend", "reward-model", "--model", str(tmp_path))
    _call("create_judge", "cdr", "--backend", "cdr", "--model", str(tmp_path), "--weak-model", str(tmp_path))
    _call("create_judge", "local", "--backend", "transformers-judge", "--model", "smollm2")
    text = _call("create_judge", "panel", "--backend", "jury", "--members", "gpt,local", "--rule", "mean")
    assert "judge 'panel' (jury) saved" in text
    gpt = Judge.objects.get(name="gpt")
    assert (gpt.requests_per_minute, gpt.tokens_per_minute, str(gpt.price_prompt_per_m)) == (100, 90000, "0.1500")
    assert Judge.objects.get(name="cdr").config == {"weak": str(tmp_path)}
    assert list(Judge.objects.get(name="panel").members.values_list("name", flat=True)) == ["gpt", "local"]


def test_create_judge_refuses_bad_settings_by_name():
    with pytest.raises(CommandError, match="base_url"):
        _call("create_judge", "gpt", "--backend", "openai", "--model", "m")
    with pytest.raises(CommandError, match="--config is not JSON"):
        _call("create_judge", "gpt", "--backend", "openai", "--config", "{")
    _call("create_judge", "gpt", "--backend", "openai", "--model", "m", "--base-url", "http://h/v1")
    with pytest.raises(CommandError, match="exists"):
        _call("create_judge", "gpt", "--backend", "openai", "--model", "m", "--base-url", "http://h/v1")
    _call("create_judge", "gpt", "--backend", "openai", "--model", "m2", "--base-url", "http://h/v1", "--update")
    assert Judge.objects.get(name="gpt").model == "m2"


def test_judge_inline_labels_at_most_limit_items_and_shows_progress():
    project = ProjectFactory(slug="cli", aspects=["overall"])
    for _ in range(3):
        ItemFactory(project=project, responses=["Long answer with detail.", "Short."])
    with FakeOpenAI(verdict="longer") as fake:
        _call("create_judge", "loop", "--backend", "openai", "--model", "fake", "--base-url", fake.url)
        text = _call("judge", "cli", "--judge", "loop", "--limit", "2", "--inline", "--chunk-size", "1")
        assert len(fake.chat_requests) == 4
    assert "run 1: loop on 2 item(s) of cli" in text.replace(f"run {JudgeRun.objects.get().pk}:", "run 1:")
    assert "[###############...............] 2/4" in text  # after the first chunk
    assert "done 4 failed 0 remaining 0" in text
    assert Judgment.objects.filter(order="combined", labels={"overall": "A-is-clearly-better"}).count() == 2


def test_judge_names_a_missing_project_or_judge():
    with pytest.raises(CommandError, match="no project"):
        _call("judge", "nope", "--judge", "x")
    ProjectFactory(slug="there")
    with pytest.raises(CommandError, match="create_judge"):
        _call("judge", "there", "--judge", "x")
