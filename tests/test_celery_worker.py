"""A real Celery worker process, on Redis, runs an import end to end against the test database.

The rows must be committed for another process to see them, hence `transactional_db`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, transaction

from tests.factories import ProjectFactory
from webapp.celery import app
from webapp.models import HumanAnnotation, ImportJob, Item, Project, Response
from webapp.services.imports import enqueue_import
from webapp.tasks import run_import

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).parent / "celery"
JOB_TIMEOUT = 60

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _test_database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = db["PORT"] or "5432"
    return f"postgres://{auth}@{host}:{port}/{quote(db['NAME'], safe='')}"


class Worker:
    def __init__(self, proc: subprocess.Popen[str], hostname: str, log: Path):
        self.proc = proc
        self.hostname = hostname
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running_worker(tmp_path: Path, pool: str = "solo", **extra_env: str) -> Iterator[Worker]:
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "the worker test needs the Redis broker"
    app.control.purge()
    hostname = f"hp-test-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        **os.environ,
        "HYBRIDPREF_MODE": "test",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        **extra_env,
    }
    log = tmp_path / "worker.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                str(CELERY),
                "-A",
                "webapp",
                "worker",
                f"--pool={pool}",
                "--concurrency=1",
                "-Q",
                "celery",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
                "-n",
                hostname,
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    handle = Worker(proc, hostname, log)
    try:
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the worker exited with {proc.returncode}:\n{handle.output()}")
            if app.control.ping(destination=[hostname], timeout=0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not answer a ping within 45 s:\n{handle.output()}")
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        app.control.purge()


@pytest.fixture
def worker(transactional_db: None, tmp_path: Path) -> Iterator[Worker]:
    with running_worker(tmp_path) as handle:
        yield handle


def wait_for_job(job_id: int, worker: Worker, timeout: float = JOB_TIMEOUT) -> ImportJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ImportJob.objects.get(pk=job_id)
        if job.status in (ImportJob.DONE, ImportJob.FAILED):
            return job
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker died with {worker.proc.returncode}:\n{worker.output()}")
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still {ImportJob.objects.get(pk=job_id).status} after {timeout} s:\n{worker.output()}")


def native_rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"w-{k}",
            "prompt": f"Question {k}?",
            "responses": [{"text": f"Answer A{k}", "model": "m1"}, {"text": f"Answer B{k}", "model": "m2"}],
            "human_annotations": [{"annotator": "rater-1", "labels": {"overall": "A-is-slightly-better"}}],
        }
        for k in range(n)
    ]


def test_a_worker_runs_a_queued_import_once_it_is_committed(worker, write_jsonl):
    project = ProjectFactory(slug="worker-import")
    path = write_jsonl(native_rows(25))

    with transaction.atomic():
        job = enqueue_import(project, path, fmt="native")
        # Not sent yet: the worker must never see a job row that is not committed.
        assert ImportJob.objects.get(pk=job.pk).status == ImportJob.QUEUED

    job = wait_for_job(job.pk, worker)
    assert job.status == ImportJob.DONE, job.errors
    assert (job.created, job.updated, job.unchanged) == (25, 0, 0)
    assert job.errors == []
    assert job.finished_at is not None
    assert Item.objects.filter(project=project).count() == 25
    assert Response.objects.filter(item__project=project).count() == 50
    assert HumanAnnotation.objects.filter(item__project=project, imported=True).count() == 25
    item = Item.objects.get(project=project, external_id="w-7")
    assert item.prompt == "Question 7?"
    assert [r.text for r in item.responses.all()] == ["Answer A7", "Answer B7"]
    assert "Task webapp.run_import[" in worker.output()

    # Running the same job again, in this process or through the task, changes nothing.
    finished_at = job.finished_at
    assert run_import(job.pk) == ImportJob.DONE
    again = ImportJob.objects.get(pk=job.pk)
    assert (again.status, again.created, again.unchanged, again.finished_at) == ("done", 25, 0, finished_at)
    assert Item.objects.filter(project=project).count() == 25
    assert Response.objects.filter(item__project=project).count() == 50


def test_a_prefork_worker_imports_a_large_file_through_the_reading_process(transactional_db, tmp_path, write_jsonl):
    # Production workers are prefork: their pool processes are daemons, which may not start
    # multiprocessing children; the import's reader is a plain subprocess, which they may.
    project = ProjectFactory(slug="worker-child")
    path = write_jsonl(native_rows(40))

    with running_worker(tmp_path, pool="prefork", IMPORT_READER_PROCESS_MIN_BYTES="1") as prefork:
        job = enqueue_import(project, path, fmt="native")
        job = wait_for_job(job.pk, prefork)

    assert job.status == ImportJob.DONE, job.errors
    assert (job.created, job.updated, job.unchanged) == (40, 0, 0)
    assert [r.text for r in Item.objects.get(project=project, external_id="w-9").responses.all()] == [
        "Answer A9",
        "Answer B9",
    ]
    assert HumanAnnotation.objects.filter(item__project=project, imported=True).count() == 40
    assert f"reading {path.name} in a child process" in prefork.output()


def test_the_worker_leaves_a_finished_job_alone_when_its_task_arrives_twice(worker, write_jsonl):
    project = ProjectFactory(slug="worker-twice")
    path = write_jsonl(native_rows(3))
    with transaction.atomic():
        job = enqueue_import(project, path, fmt="native")
    job = wait_for_job(job.pk, worker)
    assert job.status == ImportJob.DONE

    # A redelivered task (acks are late, so this happens after a worker crash) must not import again.
    run_import.delay(job.pk)
    marker_project = ProjectFactory(slug="worker-marker")
    with transaction.atomic():
        marker = enqueue_import(marker_project, write_jsonl(native_rows(1), name="marker.jsonl"), fmt="native")
    # The solo pool runs tasks in order: once the marker is done, the redelivery has run too.
    assert wait_for_job(marker.pk, worker).status == ImportJob.DONE
    assert worker.output().count("Task webapp.run_import[") >= 3

    again = ImportJob.objects.get(pk=job.pk)
    assert (again.status, again.created, again.finished_at) == (job.status, job.created, job.finished_at)
    assert Item.objects.filter(project=project).count() == 3


def test_an_import_with_bad_rows_fails_in_the_worker_with_the_row_errors_recorded(worker, write_jsonl):
    project = ProjectFactory(slug="worker-bad")
    rows: list[object] = native_rows(2)
    rows.append({"id": "no-responses", "prompt": "Where are the answers?"})
    rows.append("{this is not json")
    rows.append({"id": "w-0", "prompt": "again", "responses": [{"text": "a"}, {"text": "b"}]})
    path = write_jsonl(rows)

    with transaction.atomic():
        job = enqueue_import(project, path, fmt="native")
    job = wait_for_job(job.pk, worker)

    assert job.status == ImportJob.FAILED
    assert job.finished_at is not None
    assert job.created == 0
    assert len(job.errors) == 3, job.errors
    assert any(e.startswith("line 3: responses") for e in job.errors), job.errors
    assert any(e.startswith("line 4") for e in job.errors), job.errors
    assert any("line 5" in e and "duplicate id 'w-0'" in e for e in job.errors), job.errors
    # Nothing from the file was written, not even its good rows.
    assert not Item.objects.filter(project=project).exists()

    # A failed job is finished too: running it again does not retry it.
    assert run_import(job.pk) == ImportJob.FAILED
    assert ImportJob.objects.get(pk=job.pk).errors == job.errors


def test_an_import_of_a_missing_file_fails_in_the_worker_with_the_reason(worker, tmp_path):
    project = Project.objects.create(slug="worker-missing", name="missing")
    with transaction.atomic():
        job = enqueue_import(project, tmp_path / "gone.jsonl", fmt="native")
    job = wait_for_job(job.pk, worker)
    assert job.status == ImportJob.FAILED
    assert job.errors == [f"no such file: {tmp_path / 'gone.jsonl'}"]


def test_a_worker_runs_a_judge_run_end_to_end_retrying_server_errors(worker):
    from io import StringIO

    from django.core.management import call_command

    from tests.factories import ItemFactory
    from tests.fake_openai import FakeOpenAI, deterministic_reply, error_reply
    from webapp.models import JudgeRun, Judgment
    from webapp.services import judging

    project = ProjectFactory(slug="worker-judge", aspects=["overall"])
    items = [ItemFactory(project=project, responses=["Short.", f"A much longer answer number {k}."]) for k in range(5)]
    served: list[int] = []

    def two_503s_then_verdicts(received):
        served.append(1)
        # The first two calls fail: their chunk goes back to the queue with backoff, then succeeds.
        return error_reply(503) if len(served) <= 2 else deterministic_reply(received, "longer")

    with FakeOpenAI(two_503s_then_verdicts) as fake:
        judging.create_judge(
            name="worker-judge", backend="openai", model="fake", config={"base_url": fake.url, "max_retries": 0}
        )
        out = StringIO()
        # The command queues the run for the worker and shows its progress until it ends.
        call_command("judge", project.slug, "--judge", "worker-judge", "--chunk-size", "2", stdout=out)
    run = JudgeRun.objects.get(project=project)
    assert run.status == JudgeRun.DONE, worker.output()
    text = out.getvalue()
    assert f"run {run.pk}: worker-judge on 5 item(s)" in text
    assert "] 10/10 done 10 failed 0 remaining 0" in text
    assert f"run {run.pk} done: 10 done, 0 failed, 0 remaining" in text
    for item in items:
        combined = Judgment.objects.get(item=item, order="combined")
        assert combined.labels == {"overall": "B-is-clearly-better"}
    retried = Judgment.objects.filter(run=run, attempts=2).exclude(order="combined")
    assert retried.count() == 2
    assert "Retry in" in worker.output()
    assert len(served) == 12
