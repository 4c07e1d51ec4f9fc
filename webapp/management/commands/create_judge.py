import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotators.registry import RUNNABLE_BACKENDS
from webapp.services.judging import JudgingError, create_judge


class Command(BaseCommand):
    help = "Create (or with --update, change) an LLM judge."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--backend", required=True, choices=RUNNABLE_BACKENDS)
        parser.add_argument("--model", default="", help="endpoint model id, local model directory, or 'smollm2'")
        parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
        parser.add_argument("--api-key-env", help="name of the environment variable that holds the API key")
        parser.add_argument("--weak-model", help="cdr: the weak model (--model is the strong one)")
        parser.add_argument("--members", default="", help="jury: judge names, comma-separated")
        parser.add_argument("--rule", help="jury: majority (default) or mean")
        parser.add_argument("--price-prompt", default="0", help="USD per million prompt tokens")
        parser.add_argument("--price-completion", default="0", help="USD per million completion tokens")
        parser.add_argument("--rpm", type=int, default=0, help="requests per minute for the endpoint (0: no limit)")
        parser.add_argument("--tpm", type=int, default=0, help="tokens per minute for the endpoint (0: no limit)")
        parser.add_argument("--config", default="{}", help="other backend settings as a JSON object")
        parser.add_argument("--update", action="store_true", help="change the judge if it exists")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            config = json.loads(opts["config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise CommandError("--config must be a JSON object")
        for option, key in (
            ("base_url", "base_url"),
            ("api_key_env", "api_key_env"),
            ("weak_model", "weak"),
            ("rule", "rule"),
        ):
            if opts[option]:
                config[key] = opts[option]
        try:
            judge = create_judge(
                name=opts["name"],
                backend=opts["backend"],
                model=opts["model"],
                config=config,
                members=[m for m in opts["members"].split(",") if m.strip()],
                price_prompt_per_m=opts["price_prompt"],
                price_completion_per_m=opts["price_completion"],
                requests_per_minute=opts["rpm"],
                tokens_per_minute=opts["tpm"],
                update=opts["update"],
            )
        except JudgingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"judge {judge.name!r} ({judge.backend}{', ' + judge.model if judge.model else ''}) saved")
