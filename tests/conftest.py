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

from annotators.local import resolve_model_dir
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


# --- tiny models, built here ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer (read from the GGUF file), saved as an ordinary tokenizer directory."""
    from transformers import AutoTokenizer

    directory, gguf = resolve_model_dir("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(out)
    return out


def _tiny(tokenizer_dir: Path, out: Path, kind: str, seed: int, chat_template: bool = True) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Wide initial weights, so random scores differ enough to give labels other than a tie.
        initializer_range=0.2,
    )
    config.num_labels = 1  # one reward score (set after: the config's typed signature does not list it)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config) if kind == "lm" else LlamaForSequenceClassification(config)
    model.save_pretrained(out)
    if not chat_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    if not chat_template:
        (out / "chat_template.jinja").unlink(missing_ok=True)
    return str(out)


@pytest.fixture(scope="session")
def tiny(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Directories of tiny models: a reward model (with and without a chat template) and two LMs."""
    return {
        "rm": _tiny(tokenizer_dir, tmp_path_factory.mktemp("rm"), "rm", seed=1),
        "rm_plain": _tiny(tokenizer_dir, tmp_path_factory.mktemp("rm-plain"), "rm", seed=1, chat_template=False),
        "strong": _tiny(tokenizer_dir, tmp_path_factory.mktemp("strong"), "lm", seed=2),
        "weak": _tiny(tokenizer_dir, tmp_path_factory.mktemp("weak"), "lm", seed=3),
    }
