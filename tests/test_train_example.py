"""examples/train_reward_model.py: a tiny random Llama trained for a few steps on a hand-made export.

No network and no Hub: the tokenizer is a WordLevel one built here, the model a 2-layer Llama with
hidden size 32. The platform's `manage.py` is a fake that records its argv (the edge of the outside
world for --report-candidate).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "train_reward_model.py"
TOPICS = ("cats", "dogs", "rain", "tea", "maps", "ships", "bread", "stars", "rivers", "clocks")
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}{{ eos_token }}{% endfor %}"
FAKE_MANAGE = """import json, sys
from pathlib import Path
Path(__file__).with_name("argv.json").write_text(json.dumps(sys.argv[1:]))
"""
# What Django prints for a command it does not know.
UNKNOWN_MANAGE = """import sys
sys.stderr.write("Unknown command: 'record_score'\\nType 'manage.py help' for usage.\\n")
sys.exit(1)
"""


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_reward_model", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = load_script()


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_dataset's cache in the test's tmp dir, not ~/.cache (subprocesses get HF_HOME instead)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


def rows(n: int, split: str, *, offset: int = 0, conversational: bool = False) -> list[dict[str, Any]]:
    """Pairs where chosen says "good" and rejected "bad"; margins 1 or 2."""
    out = []
    for i in range(offset, offset + n):
        topic = TOPICS[i % len(TOPICS)]
        prompt, chosen, rejected = (
            f"tell me about {topic} {i} ",
            f"a good answer on {topic}",
            f"a bad answer on {topic}",
        )
        if conversational:
            out.append(
                {
                    "prompt": [{"role": "user", "content": prompt.strip()}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "source": "human",
                    "split": split,
                }
            )
        else:
            row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": float(1 + i % 2)}
            out.append({**row, "source": "human", "split": split})
    return out


def write_jsonl(path: Path, data: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def build_model(out: Path, *, causal: bool = False, chat_template: bool = True) -> Path:
    """A WordLevel tokenizer over the test words and a random 2-layer Llama, saved to `out`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

    words = {"tell", "me", "about", "a", "good", "bad", "answer", "on", "user", "assistant", ":", *TOPICS}
    words |= {str(i) for i in range(100)}
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    config.num_labels = 1  # one reward score
    model = LlamaForCausalLM(config) if causal else LlamaForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_script(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, **(env or {})},
    )


@dataclass
class TrainedRun:
    result: subprocess.CompletedProcess[str]
    summary: dict[str, Any]
    output_dir: Path
    platform: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One CPU run: 40 train + 10 test rows, 30 steps, --json and --report-candidate to a fake platform."""
    tmp = tmp_path_factory.mktemp("train")
    model_dir = build_model(tmp / "model")
    export = tmp / "export"
    write_jsonl(export / "trl-preference.jsonl", rows(40, "train") + rows(10, "test", offset=40))
    platform = tmp / "platform"
    platform.mkdir()
    (platform / "manage.py").write_text(FAKE_MANAGE, encoding="utf-8")
    out, summary_path = tmp / "out", tmp / "summary.json"
    result = run_script(
        export,
        "--model",
        model_dir,
        "--output-dir",
        out,
        "--max-steps",
        "30",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--max-length",
        "64",
        "--json",
        summary_path,
        "--report-candidate",
        "17",
        "--platform-root",
        platform,
        env={"HF_HOME": str(tmp / "hf-home"), "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return TrainedRun(result, json.loads(summary_path.read_text()), out, platform)


@pytest.mark.slow
def test_trains_and_summarises(trained: TrainedRun) -> None:
    s = trained.summary
    assert (s["train_rows"], s["test_rows"], s["test_pairs"], s["train_pairs"]) == (40, 10, 10, 40)
    assert not s["held_out"]
    assert s["used_margin"]
    assert not s["conversational"]
    assert s["steps"] == 30
    assert isinstance(s["accuracy"], float)
    assert 0.0 <= s["accuracy"] <= 1.0
    assert s["correct"] == round(s["accuracy"] * 10)
    assert isinstance(s["mean_margin"], float)
    assert s["seconds"] > 0
    assert s["file_type"] == "jsonl"
    assert f"pairwise accuracy on the test split: {s['accuracy']:.4f}" in trained.result.stdout


@pytest.mark.slow
def test_trained_model_loads_back(trained: TrainedRun) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(trained.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained.output_dir)
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        logits = model(**tokenizer(["tell me about tea 3 a good answer on tea</s>"], return_tensors="pt")).logits
    assert logits.shape == (1, 1)


@pytest.mark.slow
def test_report_candidate_runs_record_score(trained: TrainedRun) -> None:
    score = f"{trained.summary['accuracy']:.4f}"
    argv = json.loads((trained.platform / "argv.json").read_text())
    assert argv == ["record_score", "17", score]
    assert f"python manage.py record_score 17 {score}" in trained.result.stdout
    assert "reported score" in trained.result.stdout


def test_report_without_record_score_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manage.py").write_text(UNKNOWN_MANAGE, encoding="utf-8")
    assert script.report_score("5", "0.7500", tmp_path) == 1
    assert "has no record_score command yet" in capsys.readouterr().err


def test_report_without_manage_py(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert script.report_score("5", "0.7500", tmp_path) == 1
    assert "no manage.py" in capsys.readouterr().err


def test_missing_export_path(tmp_path: Path) -> None:
    result = run_script(tmp_path / "nope", "--model", tmp_path, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert f"error: export not found: {tmp_path / 'nope'} does not exist" in result.stderr


def test_directory_without_export(tmp_path: Path) -> None:
    (tmp_path / "trl-unpaired.jsonl").write_text("{}\n")
    result = run_script(tmp_path, "--model", tmp_path, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "no trl-preference export in" in result.stderr
    assert "trl-unpaired.jsonl" in result.stderr


def test_wrong_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "p", "completion": "c", "label": True, "split": "train"}])
    with pytest.raises(script.ScriptError, match=r"missing column\(s\) chosen, rejected.*trl-unpaired"):
        script.load_export(*script.find_export(path))


def test_unreadable_json(tmp_path: Path) -> None:
    (tmp_path / "trl-preference.jsonl").write_text('{"prompt": "a", "chosen"\n')
    with pytest.raises(script.ScriptError, match=r"could not read .* as jsonl: ValueError"):
        script.load_export(*script.find_export(tmp_path))


def test_unsupported_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(script.ScriptError, match="unsupported export file"):
        script.find_export(tmp_path / "data.csv")


def test_reads_each_file_type(tmp_path: Path) -> None:
    """jsonl, parquet and the hf/ directory give the same rows and splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    data = rows(8, "train") + rows(2, "test", offset=8)
    write_jsonl(tmp_path / "j" / "trl-preference.jsonl", data)
    (tmp_path / "p").mkdir()
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "p" / "trl-preference.parquet")
    Dataset.from_list(data).save_to_disk(str(tmp_path / "h" / "hf"))
    for name, kind in (("j", "jsonl"), ("p", "parquet"), ("h", "hf")):
        found_kind, path = script.find_export(tmp_path / name)
        assert found_kind == kind
        loaded = script.load_export(found_kind, path)
        splits = script.split_export(loaded, seed=0)
        assert (len(splits.train), len(splits.test), splits.held_out) == (8, 2, False)
        assert splits.test["prompt"] == [r["prompt"] for r in data[8:]]


def test_holds_out_by_prompt_hash_without_test_rows(tmp_path: Path) -> None:
    from datasets import Dataset

    data = rows(200, "train")
    splits = script.split_export(Dataset.from_list(data), seed=3)
    assert splits.held_out
    assert 0 < len(splits.test) < 50
    assert len(splits.train) + len(splits.test) == 200
    expected = {r["prompt"] for r in data if script.held_out(r["prompt"], 3)}
    assert set(splits.test["prompt"]) == expected
    assert not expected & set(splits.train["prompt"])
    # The platform's split_for, to the bit.
    from webapp.exporting.aggregate import split_for

    assert all((split_for(r["prompt"], 3, 0.1) == "test") == (r["prompt"] in expected) for r in data)


def test_tokenizes_like_trl(tmp_path: Path) -> None:
    """Standard form: prompt + response + EOS; conversational: the chat template, or role lines without one."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_model(tmp_path / "m"))
    standard = script.tokenize_pairs(
        Dataset.from_list(rows(2, "train")), tokenizer, chat_template=False, use_margin=True
    )
    assert standard[0]["chosen_ids"] == tokenizer("tell me about cats 0 a good answer on cats</s>")["input_ids"]
    assert standard["margin"] == [1.0, 2.0]
    chat = Dataset.from_list(rows(1, "train", conversational=True))
    assert script.is_conversational(chat)
    templated = script.tokenize_pairs(chat, tokenizer, chat_template=True, use_margin=False)
    messages = [chat[0]["prompt"][0], chat[0]["chosen"][0]]
    expected: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert templated[0]["chosen_ids"] == expected["input_ids"]
    assert "margin" not in templated.column_names
    plain = script.tokenize_pairs(chat, tokenizer, chat_template=False, use_margin=False)
    text = "user: tell me about cats 0\nassistant: a good answer on cats</s>"
    assert plain[0]["chosen_ids"] == tokenizer(text)["input_ids"]


def test_causal_lm_gets_a_score_head(tmp_path: Path) -> None:
    from datasets import Dataset

    model, tokenizer, note = script.load_model(build_model(tmp_path / "lm", causal=True))
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1
    assert "new score head" in note
    assert model.config.pad_token_id == tokenizer.pad_token_id
    pairs = script.tokenize_pairs(Dataset.from_list(rows(3, "test")), tokenizer, chat_template=False, use_margin=False)
    chosen, rejected, cut = script.score_pairs(model, tokenizer.pad_token_id, pairs, batch_size=2, max_length=6)
    assert len(chosen) == len(rejected) == 3
    assert cut == 3


def test_model_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(script.ScriptError, match="local model directory"):
        script.load_model(tmp_path / "missing")
