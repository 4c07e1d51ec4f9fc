#!/usr/bin/env python
"""Train a reward model on a HybridPref `trl-preference` export with TRL's RewardTrainer.

    python examples/train_reward_model.py EXPORT --model MODEL_DIR --output-dir OUT [--json summary.json]

EXPORT is an export directory (holding `hf/`, `trl-preference.parquet` or `trl-preference.jsonl`) or one
data file (.jsonl / .json / .parquet) or a `datasets.load_from_disk` directory. Rows have prompt, chosen
and rejected (strings, or message lists in the conversational form), optionally `margin`, `source` and
`split`. "train" rows train and "test" rows evaluate; with no test row, 10% of the prompts are held out
by a seeded hash of the prompt. The pairwise accuracy on the test split is computed here, from the
trained model's own scores. See examples/README.md.

Models load from local directories only (HF_HUB_OFFLINE=1 unless set otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Never reach the Hugging Face Hub: models and data are local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPORT_NAME = "trl-preference"
REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
HOLDOUT_FRACTION = 0.1
TRAIN, TEST = "train", "test"
# The platform's copy-paste command; SCORE is the pairwise accuracy with 4 decimals.
RECORD_COMMAND = ("python", "manage.py", "record_score")


class ScriptError(Exception):
    """A problem with the inputs or the environment: printed as `error: ...`, exit status 2."""


def say(message: str) -> None:
    print(message, flush=True)


# --- the export -------------------------------------------------------------------------------------


def find_export(path: Path) -> tuple[str, Path]:
    """("hf" | "parquet" | "jsonl", the path to load) for an export directory or a data file."""
    if not path.exists():
        raise ScriptError(f"export not found: {path} does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return "jsonl", path
        if suffix == ".parquet":
            return "parquet", path
        raise ScriptError(
            f"unsupported export file {path}: use a .jsonl, .json or .parquet file or an export directory"
        )
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "hf", path  # a load_from_disk directory itself
    if (path / "hf").is_dir():
        return "hf", path / "hf"
    for kind in ("parquet", "jsonl"):
        candidate = path / f"{EXPORT_NAME}.{kind}"
        if candidate.is_file():
            return kind, candidate
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise ScriptError(
        f"no {EXPORT_NAME} export in {path}: expected hf/, {EXPORT_NAME}.parquet or {EXPORT_NAME}.jsonl "
        f"(found: {found})"
    )


def load_export(kind: str, path: Path) -> Dataset:
    """The export's rows as one Dataset (a DatasetDict's splits become the `split` column)."""
    from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk

    if path.is_file() and path.stat().st_size == 0:
        raise ScriptError(f"{path} is empty")
    try:
        if kind == "hf":
            loaded = load_from_disk(str(path))
        else:
            loaded = load_dataset("json" if kind == "jsonl" else "parquet", data_files=str(path), split="train")
    except Exception as exc:
        root: BaseException = exc  # datasets wraps the parser's error, whose message says where
        for _ in range(10):
            inner = root.__cause__ or root.__context__
            if inner is None:
                break
            root = inner
        raise ScriptError(f"could not read {path} as {kind}: {type(root).__name__}: {root}") from exc
    if isinstance(loaded, DatasetDict):
        parts = [
            part if "split" in part.column_names else part.add_column("split", [name] * len(part))
            for name, part in loaded.items()
        ]
        loaded = concatenate_datasets(parts)
    if not isinstance(loaded, Dataset):
        raise ScriptError(f"{path} is not a dataset ({type(loaded).__name__})")
    missing = [c for c in REQUIRED_COLUMNS if c not in loaded.column_names]
    if missing:
        hint = (
            " (this looks like a trl-unpaired export; export trl-preference)"
            if "completion" in loaded.column_names
            else ""
        )
        raise ScriptError(
            f"{path} is not a {EXPORT_NAME} export: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(loaded.column_names) or 'none'}{hint}"
        )
    if len(loaded) == 0:
        raise ScriptError(f"{path} has no rows")
    return loaded


def prompt_key(prompt: str | list[dict[str, str]]) -> str:
    """What the hold-out hashes: the prompt text, or the messages as the platform spells a conversation."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps([[m.get("role", ""), m.get("content", "")] for m in prompt], ensure_ascii=False)


def held_out(key: str, seed: int, fraction: float = HOLDOUT_FRACTION) -> bool:
    """The platform's split_for: sha256(f"{seed}\\n{key}")'s first 8 bytes below fraction * 2**64."""
    digest = hashlib.sha256(f"{seed}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


@dataclass
class Splits:
    train: Dataset
    test: Dataset
    held_out: bool  # the test rows were held out of the train rows here
    ignored: int  # rows whose split is neither train nor test


def split_export(rows: Dataset, seed: int) -> Splits:
    """Train and test rows by the `split` column; with no test row, hold out 10% of the prompts."""
    labels = rows["split"] if "split" in rows.column_names else [TRAIN] * len(rows)
    train_idx = [i for i, s in enumerate(labels) if s == TRAIN]
    test_idx = [i for i, s in enumerate(labels) if s == TEST]
    ignored = len(rows) - len(train_idx) - len(test_idx)
    holdout = not test_idx
    if holdout:
        prompts = rows.select(train_idx)["prompt"]
        marks = [held_out(prompt_key(p), seed) for p in prompts]
        test_idx = [i for i, m in zip(train_idx, marks, strict=True) if m]
        train_idx = [i for i, m in zip(train_idx, marks, strict=True) if not m]
    return Splits(rows.select(train_idx), rows.select(test_idx), holdout, ignored)


# --- tokenizing ---------------------------------------------------------------------------------------


def is_conversational(rows: Dataset) -> bool:
    return len(rows) > 0 and isinstance(rows[0]["chosen"], list)


def messages_text(messages: list[dict[str, str]]) -> str:
    """The fallback for a tokenizer without a chat template: one `role: content` line per message."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def tokenize_pairs(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, *, chat_template: bool, use_margin: bool
) -> Dataset:
    """chosen_ids, rejected_ids (and margin): the columns RewardTrainer takes as they are.

    As TRL does: the standard form is prompt + response + EOS (unless it already ends with EOS); the
    conversational form is the chat template applied to prompt + response messages. Without a chat
    template (`chat_template` False) messages become `role: content` lines and follow the standard form.
    """
    eos = tokenizer.eos_token or ""
    conversational = is_conversational(rows)

    def text(prompt: Any, response: Any) -> str:
        joined = messages_text(prompt) + "\n" + messages_text(response) if conversational else prompt + response
        return joined if joined.endswith(eos) else joined + eos

    def ids(prompts: list[Any], responses: list[Any]) -> list[list[int]]:
        if conversational and chat_template:
            out: Any = tokenizer.apply_chat_template(
                [p + r for p, r in zip(prompts, responses, strict=True)], tokenize=True, return_dict=True
            )
            return [list(x) for x in out["input_ids"]]
        return tokenizer([text(p, r) for p, r in zip(prompts, responses, strict=True)])["input_ids"]

    def batch(b: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "chosen_ids": ids(b["prompt"], b["chosen"]),
            "rejected_ids": ids(b["prompt"], b["rejected"]),
        }
        if use_margin:
            out["margin"] = [float(m) if m is not None else 0.0 for m in b["margin"]]
        return out

    return rows.map(batch, batched=True, batch_size=512, remove_columns=rows.column_names, desc="Tokenizing")


def drop_long(pairs: Dataset, max_length: int) -> tuple[Dataset, int]:
    """Pairs whose chosen and rejected both fit max_length (RewardTrainer drops longer ones too)."""
    keep = [
        i
        for i, (c, r) in enumerate(zip(pairs["chosen_ids"], pairs["rejected_ids"], strict=True))
        if len(c) <= max_length and len(r) <= max_length
    ]
    return pairs.select(keep), len(pairs) - len(keep)


# --- the model ----------------------------------------------------------------------------------------


def quiet_head_swap() -> contextlib.AbstractContextManager[Any]:
    """TRL's guard for loading a causal LM as a classifier: the lm_head left out and the new score head
    are expected, so transformers' load report about them is not shown."""
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:  # moved in another TRL version: the report is only noise
        return contextlib.nullcontext()
    return suppress_seqcls_warning()


def load_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """A one-score sequence-classification model, its tokenizer, and what was done to get it.

    A causal LM (or base model) directory gets a new, randomly initialised score head (seeded by the
    caller's set_seed); a sequence-classification checkpoint with another number of labels gets a new
    head too.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
        raise ScriptError(f"--model must be a local model directory with a config.json: {model_dir}")
    config = AutoConfig.from_pretrained(model_dir)
    architectures = config.architectures or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    kwargs: dict[str, Any] = {"num_labels": 1, "dtype": torch.float32}
    if is_classifier and config.num_labels != 1:
        kwargs["ignore_mismatched_sizes"] = True
        note = f"sequence-classification model with {config.num_labels} labels: new one-score head"
    elif is_classifier:
        note = "sequence-classification model (one score)"
    else:
        note = f"{', '.join(architectures) or config.model_type}: new score head, randomly initialised"
    try:
        with quiet_head_swap():
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    except (ValueError, OSError) as exc:
        raise ScriptError(f"could not load {model_dir} as a sequence-classification model: {exc}") from exc
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ScriptError(f"the tokenizer in {model_dir} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
        note += "; pad token = EOS token"
    # Sequence classification reads the score at the last token before padding.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, note


def score_pairs(
    model: PreTrainedModel, pad_id: int, pairs: Dataset, batch_size: int, max_length: int
) -> tuple[list[float], list[float], int]:
    """(chosen scores, rejected scores, how many pairs were cut) with the model in eval mode, no grad.

    Padded on the right as RewardTrainer's collator does. A sequence longer than max_length keeps its
    last max_length tokens (the end of the response, where the score is read).
    """
    import torch

    device = next(model.parameters()).device
    chosen = [list(x) for x in pairs["chosen_ids"]]
    rejected = [list(x) for x in pairs["rejected_ids"]]
    cut = sum(1 for c, r in zip(chosen, rejected, strict=True) if len(c) > max_length or len(r) > max_length)
    sequences = [s[-max_length:] for s in chosen + rejected]
    # Similar lengths together: less padding, the same scores.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), 2 * batch_size):
            index = order[start : start + 2 * batch_size]
            width = max(len(sequences[i]) for i in index)
            input_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(index), width), dtype=torch.long)
            for row, i in enumerate(index):
                seq = torch.tensor(sequences[i], dtype=torch.long)
                input_ids[row, : len(seq)] = seq
                attention[row, : len(seq)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
            for i, value in zip(index, logits[:, 0].float().cpu().tolist(), strict=True):
                scores[i] = value
    return scores[: len(chosen)], scores[len(chosen) :], cut


# --- reporting to the platform -----------------------------------------------------------------------


def record_command(candidate: str, score: str) -> list[str]:
    return [*RECORD_COMMAND, candidate, score]


def report_score(candidate: str, score: str, platform_root: Path) -> int:
    """Run `python manage.py record_score CANDIDATE SCORE` in the platform root; 0 when it worked."""
    manage = platform_root / "manage.py"
    if not manage.is_file():
        print(f"error: no manage.py in --platform-root {platform_root}", file=sys.stderr)
        return 1
    command = [sys.executable, *record_command(candidate, score)[1:]]
    result = subprocess.run(command, cwd=platform_root, capture_output=True, text=True, check=False)
    if result.stdout:
        print(result.stdout, end="" if result.stdout.endswith("\n") else "\n")
    if result.returncode == 0:
        say(f"reported score {score} for candidate {candidate}")
        return 0
    if "Unknown command" in result.stderr and "record_score" in result.stderr:
        print(
            f"error: the platform in {platform_root} has no record_score command yet; "
            "the score was not reported (run the command above once it exists)",
            file=sys.stderr,
        )
    else:
        print("\n".join(result.stderr.splitlines()[-20:]), file=sys.stderr)  # the end of a traceback says why
        print(
            f"error: record_score exited with status {result.returncode}; the score was not reported", file=sys.stderr
        )
    return 1


# --- main ----------------------------------------------------------------------------------------------


@dataclass
class Summary:
    export: str
    file_type: str
    model: str
    output_dir: str
    conversational: bool = False
    used_chat_template: bool = False  # the tokenizer's chat template was applied
    used_margin: bool = False  # the loss used the export's margin column
    train_rows: int = 0
    test_rows: int = 0
    held_out: bool = False
    ignored_rows: int = 0
    train_pairs: int = 0  # train rows that fit max_length
    dropped_long: int = 0
    steps: int = 0
    train_loss: float | None = None
    test_pairs: int = 0
    test_truncated: int = 0
    correct: int = 0
    accuracy: float | None = None  # fraction of test pairs with score(chosen) > score(rejected)
    mean_margin: float | None = None  # mean of score(chosen) - score(rejected) over the test pairs
    device: str = "cpu"
    bf16: bool = False
    seed: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a reward model on a HybridPref trl-preference export with TRL's RewardTrainer."
    )
    p.add_argument(
        "export", type=Path, help="export directory, or a .jsonl / .parquet file or load_from_disk directory"
    )
    p.add_argument(
        "--model", type=Path, required=True, help="local model directory (sequence classification or causal LM)"
    )
    p.add_argument("--output-dir", type=Path, required=True, help="where the trained model and tokenizer go")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    p.add_argument(
        "--max-steps", type=int, default=-1, help="stop after this many optimizer steps (overrides --epochs)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="pairs per device per step (default 8)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1, help="batches per optimizer step (default 1)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory (large models)")
    p.add_argument("--learning-rate", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    p.add_argument(
        "--max-length", type=int, default=1024, help="longest pair in tokens; longer train pairs are dropped"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the head, the data order and the hold-out (default 0)")
    p.add_argument("--no-margin", action="store_true", help="ignore the export's margin column")
    p.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (needs a CUDA GPU that has it)")
    p.add_argument("--report-candidate", metavar="ID", help="report the accuracy to the platform for candidate ID")
    p.add_argument("--platform-root", type=Path, default=REPO_ROOT, help="the platform's root, holding manage.py")
    p.add_argument("--json", type=Path, metavar="PATH", help="write a JSON summary to PATH ('-' for stdout)")
    args = p.parse_args(argv)
    for name in ("batch_size", "gradient_accumulation_steps", "max_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_steps == 0 or (args.max_steps < 0 and args.epochs <= 0):
        p.error("nothing to train: give --epochs above 0 or --max-steps above 0")
    return args


def train(args: argparse.Namespace, summary: Summary) -> None:
    import datasets
    import torch
    import transformers
    import trl
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    summary.versions = {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "torch": torch.__version__,
    }
    if args.bf16 and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise ScriptError("--bf16 needs a CUDA GPU with bfloat16 support; leave it out on CPU")

    kind, source = find_export(args.export)
    rows = load_export(kind, source)
    say(f"export: {source} ({kind}), {len(rows)} rows")
    splits = split_export(rows, args.seed)
    summary.train_rows, summary.test_rows = len(splits.train), len(splits.test)
    summary.held_out, summary.ignored_rows = splits.held_out, splits.ignored
    if splits.ignored:
        say(f"ignoring {splits.ignored} rows whose split is neither train nor test")
    if splits.held_out:
        say(
            f"no test rows in the export: held out {len(splits.test)} of the train rows "
            f"({HOLDOUT_FRACTION:.0%} of the prompts by a hash of the prompt with seed {args.seed})"
        )
    if not len(splits.train):
        raise ScriptError("no train rows to train on")
    say(f"train rows: {summary.train_rows}, test rows: {summary.test_rows}")

    set_seed(args.seed)  # before loading: a new score head is initialised from it
    model, tokenizer, note = load_model(args.model)
    say(f"model: {args.model} ({note})")

    summary.conversational = is_conversational(rows)
    summary.used_chat_template = summary.conversational and bool(getattr(tokenizer, "chat_template", None))
    if summary.conversational and not summary.used_chat_template:
        say(
            "conversational export but the tokenizer has no chat template: "
            "messages are joined as 'role: content' lines instead"
        )
    elif summary.conversational:
        say("conversational export: the tokenizer's chat template is applied")
    summary.used_margin = "margin" in rows.column_names and not args.no_margin
    say(f"loss: -log sigmoid(score(chosen) - score(rejected){' - margin' if summary.used_margin else ''})")

    options = {"chat_template": summary.used_chat_template, "use_margin": summary.used_margin}
    train_pairs, summary.dropped_long = drop_long(tokenize_pairs(splits.train, tokenizer, **options), args.max_length)
    summary.train_pairs = len(train_pairs)
    if summary.dropped_long:
        say(f"dropped {summary.dropped_long} train pairs longer than --max-length {args.max_length}")
    if not len(train_pairs):
        raise ScriptError(f"every train pair is longer than --max-length {args.max_length}")

    config = RewardConfig(
        output_dir=str(args.output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        activation_checkpointing=args.gradient_checkpointing,  # transformers 5's name for it; TRL defaults it on
        learning_rate=args.learning_rate,
        max_length=None,  # already dropped above, so the count is known
        seed=args.seed,
        bf16=args.bf16,  # TRL turns bf16 on unless told; on only when asked
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,  # the loss is logged every 10 steps instead
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=train_pairs, processing_class=tokenizer)
    train_started = time.perf_counter()
    result = trainer.train()
    summary.train_seconds = round(time.perf_counter() - train_started, 2)
    summary.steps = trainer.state.global_step
    summary.train_loss = float(result.training_loss)
    summary.device = str(trainer.args.device)
    summary.bf16 = args.bf16
    say(
        f"trained {summary.steps} steps in {summary.train_seconds:.1f}s on {summary.device}, "
        f"loss {summary.train_loss:.4f}"
    )

    if len(splits.test):
        test_pairs = tokenize_pairs(splits.test, tokenizer, **options)
        # `model` is the trained model: the trainer trained it in place, on its device.
        chosen, rejected, summary.test_truncated = score_pairs(
            model, tokenizer.pad_token_id, test_pairs, args.batch_size, args.max_length
        )
        gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
        summary.test_pairs = len(gaps)
        summary.correct = sum(1 for g in gaps if g > 0)
        summary.accuracy = summary.correct / len(gaps)
        summary.mean_margin = sum(gaps) / len(gaps)
        if summary.test_truncated:
            say(f"{summary.test_truncated} test pairs were longer than --max-length: scored on their last tokens")
        say(
            f"pairwise accuracy on the test split: {summary.accuracy:.4f} "
            f"({summary.correct}/{summary.test_pairs} pairs), mean margin {summary.mean_margin:.4f}"
        )
    else:
        say("no test pairs (too few prompts to hold out 10%?): pairwise accuracy not computed")

    trainer.save_model(str(args.output_dir))
    tokenizer.save_pretrained(str(args.output_dir))
    say(f"saved the model and tokenizer to {args.output_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    summary = Summary(export=str(args.export), file_type="", model=str(args.model), output_dir=str(args.output_dir))
    summary.seed = args.seed
    try:
        # Fail fast, before the heavy imports, on a path that is not there.
        summary.file_type = find_export(args.export)[0]
        train(args, summary)
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.seconds = round(time.perf_counter() - started, 2)
    if args.json:
        text = json.dumps(asdict(summary), indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n", encoding="utf-8")
            say(f"summary: {args.json}")
    if summary.accuracy is None:
        if args.report_candidate is not None:
            print("error: no test pairs, so no score to report", file=sys.stderr)
            return 1
        return 0
    score = f"{summary.accuracy:.4f}"
    command = shlex.join(record_command(args.report_candidate or "ID", score))
    say(f"to report the score: cd {shlex.quote(str(args.platform_root))} && {command}")
    if args.report_candidate is None:
        return 0
    return report_score(args.report_candidate, score, args.platform_root)


if __name__ == "__main__":
    sys.exit(main())
