"""The embedded default (`make demo`): SQLite and the file-system broker, in a fresh process.

The rest of the suite runs on PostgreSQL; this keeps the demo's own database honest, since code
that only PostgreSQL accepts (raw FOR UPDATE, LATERAL joins) would break annotation there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEMO_FLOW = """
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
from webapp.models import Assignment, HumanAnnotation, Project
from webapp.services.demo import setup_demo

call_command("migrate", verbosity=0)
_, _, logins = setup_demo()
password = dict((u, p) for u, p, _ in logins)["annotator"]
client = Client()
assert client.login(username="annotator", password=password)
page = client.get("/p/pandalm-demo/annotate/")
assert page.status_code == 200, page.status_code
first = Assignment.objects.get(annotator__username="annotator")
form = {"pref-overall": "Tie", "confidence": "fairly-confident", "justification": "both say the same thing"}
swapped = client.post(f"/p/pandalm-demo/annotate/{first.pk}/submit", form, HTTP_HX_REQUEST="true")
assert swapped.status_code == 200, swapped.status_code
assert b"1 / 999 done" in swapped.content
stored = HumanAnnotation.objects.get(annotator__username="annotator")
assert stored.preferences == {"overall": "Tie"} and stored.item_id == first.item_id
second = Assignment.objects.exclude(pk=first.pk).get(annotator__username="annotator")
assert second.item_id != first.item_id

# An export on SQLite: the annotation just made, and the imported ones, with their JSON fields intact.
import json, pathlib, tempfile
from webapp.services.exports import export_now
out = pathlib.Path(tempfile.mkdtemp())
snapshot = export_now(Project.objects.get(), format="multipref", file_type="jsonl", out=out, options={})
assert snapshot.status == "done", snapshot.error
rows = {r["comparison_id"]: r for f in out.rglob("*.jsonl") for r in map(json.loads, f.open())}
assert len(rows) == 999, len(rows)
humans = rows[first.item.external_id]["normal_worker_annotations"]
mine = [h for h in humans if h["evaluator"] == "annotator"]
assert len(mine) == 1 and mine[0]["overall_pref"] == "Tie", mine
assert mine[0]["overall_confidence"] == "fairly-confident", mine
assert len(humans) == 4, humans  # PandaLM's three annotators and this one
assert all(h["overall_pref"] for h in humans), humans
print("ok", Project.objects.get().items.count())
"""


def test_the_embedded_demo_imports_and_an_annotator_submits_on_sqlite(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "HYBRIDPREF_MODE": "development",
        "HYBRIDPREF_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-c", DEMO_FLOW], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok 999")
    assert (tmp_path / "hybridpref.sqlite3").exists()
