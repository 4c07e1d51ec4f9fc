"""Sending the Celery task of an import job or an export snapshot, and sending again those whose send failed.

The row is saved first and its task sent once the row is committed (transaction.on_commit). When the broker
is down the send fails: the row is kept, marked `unsent`, and the page or API answer says so instead of an
error. resend_unsent sends such rows again: the upload and export pages call it for their project each time
they are shown (they poll while something is queued), and `manage.py resend_tasks` for every project. Only a
row whose send failed is marked, so it was never in the broker, and sending it again does not run it twice
(unless the mark cannot be cleared after a successful send: the database failing at that moment).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable

from webapp.models import ExportSnapshot, ImportJob, Project

log = logging.getLogger(__name__)

# After a failed send, the pages do not try again for this long (per process): a hung broker costs a send
# about 6 s (the socket timeouts in settings), which a page that polls every 2 s must not pay each time.
RETRY_AFTER_S = 30.0
_failed_at = float("-inf")

Sendable = ImportJob | ExportSnapshot
UNREACHABLE = (
    "the task queue is unreachable. It will be sent when the queue answers again (this page tries each time"
    " it is shown, or run `manage.py resend_tasks`)."
)
# What is still waiting for its task: an import job is queued, a snapshot running, until a worker has it.
_WAITING: tuple[tuple[type[ImportJob] | type[ExportSnapshot], str], ...] = (
    (ImportJob, ImportJob.QUEUED),
    (ExportSnapshot, ExportSnapshot.RUNNING),
)


def _task(obj: Sendable) -> Any:
    from webapp import tasks  # tasks import services, not the other way round at load time

    return tasks.run_import if isinstance(obj, ImportJob) else tasks.run_export


def _try_send(obj: Sendable) -> bool:
    global _failed_at
    try:
        _task(obj).delay(obj.pk)
    except (BrokerUnavailable, OSError) as exc:
        _failed_at = time.monotonic()
        log.warning("%s %s: the task queue is unreachable (%s); kept unsent", type(obj).__name__, obj.pk, exc)
        return False
    return True


def send(obj: Sendable) -> bool:
    """Send obj's task now; where the broker fails, mark obj unsent (row and instance) and return False."""
    if _try_send(obj):
        return True
    type(obj).objects.filter(pk=obj.pk).update(unsent=True)
    obj.unsent = True
    return False


def send_on_commit(obj: Sendable) -> None:
    """send(obj) once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: send(obj))


def resend_unsent(project: Project | None = None, *, from_page: bool = False) -> tuple[int, int]:
    """Send the unsent import jobs and export snapshots (of one project, or of all) again, oldest first.

    Each row is locked while it is sent (SKIP LOCKED: two callers never send the same row) and its mark
    cleared in the same transaction. Stops at the first failure: the broker is still down. from_page: not
    within RETRY_AFTER_S of this process's last failed send. Returns (sent, left unsent).
    """
    if from_page and time.monotonic() - _failed_at < RETRY_AFTER_S:
        return 0, 0
    sent = 0
    pending: list[tuple[type[ImportJob] | type[ExportSnapshot], int]] = []
    for model, waiting in _WAITING:
        rows = model.objects.filter(unsent=True, status=waiting)
        if project is not None:
            rows = rows.filter(project=project)
        pending += [(model, pk) for pk in rows.order_by("created_at").values_list("pk", flat=True)]
    for k, (model, pk) in enumerate(pending):
        with transaction.atomic():
            obj = model.objects.select_for_update(skip_locked=True).filter(pk=pk, unsent=True).first()
            if obj is None:  # sent by another caller meanwhile, or being sent
                continue
            if not _try_send(obj):
                return sent, len(pending) - k
            model.objects.filter(pk=pk).update(unsent=False)
        sent += 1
    return sent, 0
