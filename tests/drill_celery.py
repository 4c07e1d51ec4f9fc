"""The project's Celery app for the drills' workers, with broker transport options from the environment.

DRILL_BROKER_TRANSPORT_OPTIONS (JSON) goes over settings.CELERY_BROKER_TRANSPORT_OPTIONS, e.g. a visibility
timeout of seconds instead of Redis's hour, so that a killed worker's task comes back within a test:
`celery -A tests.drill_celery worker ...` (see tests/drill_support.py Worker).
"""

import json
import os

from webapp.celery import app

app.conf.broker_transport_options = {
    **(app.conf.broker_transport_options or {}),
    **json.loads(os.environ.get("DRILL_BROKER_TRANSPORT_OPTIONS") or "{}"),
}

__all__ = ["app"]
