"""routing.features: lexical scores, binning, metadata tags, AI-side features. No database."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from annotators.labels import label_to_score
from routing.features import (
    LEXICAL_FEATURES,
    SUBJECTS,
    TAG_KEYS,
    AIVerdict,
    Embedder,
    FeatureItem,
    StaticEmbedder,
    ai_features,
    bertscore_f1,
    bin_label,
    binarize,
    binarized_rows,
    build_tagging_messages,
    entity_similarity,
    feature_matrix,
    get_embedder,
    get_feature_embedder,
    get_static_embedder,
    length_penalty,
    lexical_feature_names,
    lexical_scores,
    named_entities,
    parse_tags,
    percentiles,
    porter_stem,
    rouge1,
    rouge_tokens,
    tag_feature_names,
    tag_features,
    tagging_schema,
)
from webapp.scheme import LIKERT5, STRENGTH7

PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"


# --- stemmer and ROUGE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        # Porter (1980)'s own examples, run through the whole algorithm.
        ("caresses", "caress"),
        ("ponies", "poni"),
        ("ties", "ti"),
        ("cats", "cat"),
        ("feed", "feed"),
        ("agreed", "agre"),
        ("plastered", "plaster"),
        ("bled", "bled"),
        ("motoring", "motor"),
        ("sing", "sing"),
        ("hopping", "hop"),
        ("falling", "fall"),
        ("hissing", "hiss"),
        ("filing", "file"),
        ("happy", "happi"),
        ("sky", "sky"),
        ("relational", "relat"),
        ("conditional", "condit"),
        ("generalizations", "gener"),
        ("oscillators", "oscil"),
        ("connection", "connect"),
        ("connecting", "connect"),
        ("goodness", "good"),
        ("adjustable", "adjust"),
        ("controlling", "control"),
        ("running", "run"),
        ("runs", "run"),
        ("rate", "rate"),
        ("cease", "ceas"),
        ("at", "at"),
        ("naïve", "naïve"),
    ],
)
def test_porter_stem(word: str, stem: str) -> None:
    assert porter_stem(word) == stem


def test_rouge_tokens_lowercase_split_and_stem_long_words_only() -> None:
    assert rouge_tokens("The Cats were RUNNING, fast!! (it's 2024)") == [
        "the",
        "cat",
        "were",
        "run",
        "fast",
        "it",
        "s",
        "2024",
    ]
    assert rouge_tokens("runs run ran") == ["run", "run", "ran"]


def test_rouge1_hand_examples() -> None:
    # 4 of 6 unigrams shared on each side ("the" twice, "cat", "on"): P = R = F = 2/3.
    assert rouge1("the cat sat on the mat", "the cat lay on the rug") == pytest.approx(2 / 3)
    # P = 2/2, R = 2/3 -> F = 2 * 1 * (2/3) / (5/3) = 0.8; symmetric.
    assert rouge1("red blue green", "red blue") == pytest.approx(0.8)
    assert rouge1("red blue", "red blue green") == pytest.approx(0.8)
    # Stemming makes these identical; case and punctuation do not matter.
    assert rouge1("Cats running.", "cat runs") == 1.0
    assert rouge1("alpha beta", "gamma delta") == 0.0
    assert rouge1("", "  ") == 1.0
    assert rouge1("words", "") == 0.0


def test_length_penalty() -> None:
    assert length_penalty("a b", "c d") == 1.0
    assert length_penalty("a b", "a b c d") == pytest.approx(math.exp(-1))
    assert length_penalty("a b c d", "a b") == pytest.approx(math.exp(-1))
    assert length_penalty("", "") == 1.0
    assert length_penalty("", "a") == 0.0


# --- entities -------------------------------------------------------------------------------------


def test_named_entities_capitalised_spans() -> None:
    text = "The Eiffel Tower is in Paris. It was built for the World's Fair by Gustave Eiffel."
    assert named_entities(text) == {"eiffel tower", "paris", "world's fair", "gustave eiffel"}
    # Sentence-initial single capitals say nothing; "I" never counts; "of" joins inside a run.
    assert named_entities("Python is great. I use it at the Bank of America every day.") == {"bank of america"}
    # A leading function word is dropped from a sentence-initial run.
    assert named_entities("In London it rains.\nNew York is big.") == {"london", "new york"}
    assert named_entities("- Install the package\n- Then run it") == set()


def test_named_entities_dates_numbers_and_quotes() -> None:
    text = 'It opened on March 31, 1889 and cost $1,500,000, about 20% more; it is 330 m tall, "Iron Lady".'
    assert named_entities(text) == {"march 31 1889", "$1500000", "20 %", "330 m", "iron lady"}
    assert named_entities("Born 4th of August 1961, in the 1990s, due 2024-01-05.") == {
        "4 of august 1961",
        "1990s",
        "2024-01-05",
    }
    assert named_entities("5km and 5 km are the same") == {"5 km"}
    assert named_entities('Use "|" as the separator') == set()


def test_entity_similarity_jaccard() -> None:
    a = "Barack Obama visited Paris in 2015."
    b = "Later he went to Paris and London."
    # {barack obama, paris, 2015} vs {paris, london}: 1 shared of 4.
    assert entity_similarity(a, b) == pytest.approx(0.25)
    assert entity_similarity("no entities here.", "none here either.") == 1.0
    assert entity_similarity(a, "nothing.") == 0.0
    assert entity_similarity(a, a) == 1.0


# --- BERTScore arithmetic ---------------------------------------------------------------------------


def test_bertscore_f1_hand_example() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    b = np.array([[3.0, 0.0]])
    # sim = [[1], [0]]: precision over A's tokens = (1 + 0) / 2, recall over B's = 1.
    assert bertscore_f1(a, b) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert bertscore_f1(b, a) == pytest.approx(2 / 3)
    assert bertscore_f1(a, a) == pytest.approx(1.0)
    assert bertscore_f1(np.zeros((0, 2)), np.zeros((0, 2))) == 1.0
    assert bertscore_f1(a, np.zeros((0, 2))) == 0.0


# --- binning --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (-0.2, "low"),
        (0.0, "low"),
        (0.33, "low"),
        (0.3301, "mid"),
        (0.5, "mid"),
        (0.67, "mid"),
        (0.6701, "high"),
        (1.0, "high"),
        (1.5, "high"),
    ],
)
def test_bin_edges(value: float, label: str) -> None:
    assert bin_label(value) == label


def test_bin_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bin_label(float("nan"))


def test_percentiles_average_rank_over_n() -> None:
    assert percentiles([10, 20, 20, 40]).tolist() == [0.25, 0.625, 0.625, 1.0]
    assert percentiles([3, 1, 2]).tolist() == pytest.approx([1.0, 1 / 3, 2 / 3])
    assert percentiles([7, 7]).tolist() == [0.75, 0.75]
    assert percentiles([]).tolist() == []


def _raw(sim: float, length: float) -> dict[str, float]:
    return {
        name: (length if name in ("token_len_diff", "prompt_len", "len_shorter", "len_longer") else sim)
        for name in LEXICAL_FEATURES
    }


def test_binarize_names_and_bins() -> None:
    raw = [_raw(0.1, 10), _raw(0.5, 20), _raw(0.9, 20), _raw(0.67, 40)]
    names, matrix = binarize(raw)
    assert names == lexical_feature_names()
    assert len(names) == 27
    assert names[:3] == ["bertscore=low", "bertscore=mid", "bertscore=high"]
    assert matrix.dtype == bool
    assert matrix.shape == (4, 27)
    assert matrix.sum(axis=1).tolist() == [9, 9, 9, 9]  # one bin per feature
    col = {n: j for j, n in enumerate(names)}
    assert [bool(matrix[i, col["cosine_sim=low"]]) for i in range(4)] == [True, False, False, False]
    assert [bool(matrix[i, col["cosine_sim=high"]]) for i in range(4)] == [False, False, True, False]
    assert bool(matrix[3, col["rouge=mid"]])  # 0.67 is still mid
    # Lengths 10, 20, 20, 40 -> percentiles 0.25, 0.625, 0.625, 1.0 -> low, mid, mid, high.
    assert [bool(matrix[i, col["prompt_len=low"]]) for i in range(4)] == [True, False, False, False]
    assert [bool(matrix[i, col["prompt_len=mid"]]) for i in range(4)] == [False, True, True, False]
    assert [bool(matrix[i, col["len_longer=high"]]) for i in range(4)] == [False, False, False, True]
    rows = binarized_rows(raw)
    assert rows[0]["bertscore=low"] is True
    assert sum(rows[0].values()) == 9


def test_binarize_needs_every_score() -> None:
    raw = [_raw(0.1, 1)]
    del raw[0]["rouge"]
    with pytest.raises(ValueError, match="rouge"):
        binarize(raw)
    names, matrix = binarize([])
    assert len(names) == 27
    assert matrix.shape == (0, 27)


# --- metadata tags --------------------------------------------------------------------------------


def test_tag_value_sets_make_ninety_features_with_the_lexical_ones() -> None:
    assert len(SUBJECTS) == 46
    assert len(set(SUBJECTS)) == 46
    assert len(tag_feature_names()) == 63
    assert len(tag_feature_names()) + len(lexical_feature_names()) == 90


def test_build_tagging_messages_and_schema() -> None:
    messages = build_tagging_messages("  Explain the Krebs cycle {briefly}.  ")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Explain the Krebs cycle {briefly}." in user
    assert "Materials science and engineering" in user
    assert "JSON" in user
    assert all(key in user for key in TAG_KEYS)
    schema = tagging_schema()
    assert schema["required"] == list(TAG_KEYS)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["subject_of_expertise"]["items"]["enum"] == list(SUBJECTS)
    assert schema["properties"]["safety_concern"]["enum"] == ["safe", "low", "moderate", "high"]
    json.dumps(schema)


def test_parse_tags_fenced_json_in_prose() -> None:
    text = (
        "<think>maybe chemistry?</think>Here is my analysis:\n```json\n"
        '{"Subject of Expertise": ["biology", "Medicine & Health", "Cooking"], "expertise_level": "Expert",\n'
        '"languages": ["english", "Klingon"], "open_endedness": "LOW", "safety_concern": "none",\n'
        '"complexity_of_intents": "simple", "type_of_in_context_material": ["table"],\n'
        '"format_constraints": [], "extra": 1,}\n```\nHope this helps.'
    )
    assert parse_tags(text) == {
        "subject_of_expertise": ["Biology", "Medicine and health"],  # "Cooking" dropped
        "expertise_level": "expert domain knowledge",
        "languages": ["English"],
        "open_endedness": "low",
        "safety_concern": "safe",
        "complexity_of_intents": "simple",
        "type_of_in_context_material": True,
        "format_constraints": False,
    }


def test_parse_tags_lenient_shapes() -> None:
    tags = parse_tags(
        'Tags: {"subjects": "Computer science; mathematics", "safety": "High", "in_context": "none",'
        ' "format": "bullet list", "complexity": ["complex"]}'
    )
    assert tags == {
        "subject_of_expertise": ["Computer sciences", "Mathematics"],
        "safety_concern": "high",
        "type_of_in_context_material": False,
        "format_constraints": True,
        "complexity_of_intents": "complex",
    }
    # The first JSON object without tag keys is skipped.
    assert parse_tags('{"note": 1} then {"expertise_level": "general public"}') == {"expertise_level": "general public"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("I cannot help with that.", "no JSON object"),
        ('{"answer": "Biology"}', "no JSON object with tag keys"),
        (
            '{"subject_of_expertise": ["Cooking"], "safety_concern": "extreme"}',
            "subject_of_expertise: unknown value 'Cooking'",
        ),
        (
            '{"subject_of_expertise": ["Cooking"], "safety_concern": "extreme"}',
            "safety_concern: unknown value 'extreme'",
        ),
    ],
)
def test_parse_tags_failures_are_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tags(text)


def test_tag_features_one_hot() -> None:
    tags = parse_tags(
        '{"subject_of_expertise": ["Biology", "Chemistry"], "expertise_level": "expert domain knowledge",'
        ' "languages": ["English"], "open_endedness": "no", "safety_concern": "high",'
        ' "complexity_of_intents": "moderate", "type_of_in_context_material": ["url"], "format_constraints": ["json"]}'
    )
    features = tag_features(tags)
    assert list(features) == tag_feature_names()
    assert {name for name, on in features.items() if on} == {
        "subject=Biology",
        "subject=Chemistry",
        "expertise=expert domain knowledge",
        "language=English",
        "open_endedness=no",
        "safety=high",
        "complexity=moderate",
        "in_context=yes",
        "format_constraints=yes",
    }
    partial = tag_features({"safety_concern": "safe", "format_constraints": False})
    assert {name for name, on in partial.items() if on} == {"safety=safe"}
    assert len(partial) == 63


# --- AI-side features -----------------------------------------------------------------------------


def test_ai_features_per_judge_and_across() -> None:
    verdicts = [
        AIVerdict("gpt", label_to_score("A-is-clearly-better", LIKERT5), order_inconsistent=False, soft=0.9),
        AIVerdict("rm", -0.2, soft=-3.0, soft_is_margin=True),
        AIVerdict("jury", label_to_score(-1, STRENGTH7), jury_disagreement=0.0),
        AIVerdict("small", label_to_score("Tie", LIKERT5), order_inconsistent=True, jury_disagreement=0.5),
    ]
    f = ai_features(verdicts)
    on = {name for name, value in f.items() if value}
    assert on == {
        "ai[gpt].winner=A",
        "ai[gpt].strength=strong",
        "ai[gpt].soft_confidence=high",  # |0.9 - 0.5| * 2 = 0.8
        "ai[rm].winner=B",
        "ai[rm].strength=weak",
        "ai[rm].soft_confidence=high",  # sigmoid(-3) = 0.047 -> 0.905
        "ai[jury].winner=A",  # strength7 -1 favours A: +1/3
        "ai[jury].strength=weak",
        "ai[jury].jury_disagreement=none",
        "ai[small].winner=tie",
        "ai[small].order_inconsistent=yes",
        "ai[small].jury_disagreement=mid",
        "ai.judges_disagree=yes",
        "ai.any_order_inconsistent=yes",
    }
    assert all(isinstance(v, bool) for v in f.values())
    assert len(f) == 4 * 13 + 2  # 3 winner + 2 strength + 1 order + 3 soft + 4 jury per judge


def test_ai_features_agreement_and_errors() -> None:
    f = ai_features([AIVerdict("a", 0.5, soft=0.6), AIVerdict("b", 1.0)])
    assert f["ai.judges_disagree=yes"] is False
    assert f["ai[a].soft_confidence=low"] is True  # |0.6 - 0.5| * 2 = 0.2
    assert not any(f[f"ai[b].soft_confidence={b}"] for b in ("low", "mid", "high"))
    assert ai_features([]) == {"ai.judges_disagree=yes": False, "ai.any_order_inconsistent=yes": False}
    with pytest.raises(ValueError, match="two verdicts"):
        ai_features([AIVerdict("a", 0.5), AIVerdict("a", -0.5)])


# --- the matrix -----------------------------------------------------------------------------------


def test_feature_matrix_sorted_stable_names() -> None:
    rows = [
        {"z=yes": True, "a=low": False},
        {"a=low": True, "m=x": True},
        {},
    ]
    names, matrix = feature_matrix(rows)
    assert names == ["a=low", "m=x", "z=yes"]
    assert matrix.dtype == bool
    assert matrix.tolist() == [[False, False, True], [True, True, False], [False, False, False]]
    names2, matrix2 = feature_matrix([dict(reversed(list(r.items()))) for r in rows])
    assert names2 == names
    assert (matrix2 == matrix).all()
    with pytest.raises(ValueError, match="not a boolean"):
        feature_matrix([{"x": 0.4}])
    assert feature_matrix([])[1].shape == (0, 0)


def test_feature_matrix_merges_the_three_groups() -> None:
    lexical = binarized_rows([_raw(0.2, 3), _raw(0.8, 5)])
    tags = [tag_features({"subject_of_expertise": ["Law"]}), tag_features({})]
    ai = [ai_features([AIVerdict("j", 1.0)]), ai_features([AIVerdict("j", -0.5)])]
    names, matrix = feature_matrix([{**x, **t, **a} for x, t, a in zip(lexical, tags, ai, strict=True)])
    assert names == sorted(names)
    assert len(names) == 27 + 63 + 13 + 2
    col = {n: j for j, n in enumerate(names)}
    assert matrix[0, col["subject=Law"]]
    assert not matrix[1, col["subject=Law"]]
    assert matrix[1, col["ai[j].winner=B"]]


# --- the real MiniLM model ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["contextual", "static"])
def embedder(request: pytest.FixtureRequest) -> Embedder | StaticEmbedder:
    """Each lexical-score test runs with the MiniLM model and with its static distillation."""
    return get_embedder(device="cpu") if request.param == "contextual" else get_static_embedder()


def _pandalm_items(n: int) -> list[FeatureItem]:
    items: list[FeatureItem] = []
    for line in PANDALM.read_text().splitlines():
        row = json.loads(line)
        if not all(isinstance(row.get(k), str) for k in ("instruction", "input", "response1", "response2")):
            continue
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"].strip() else "")
        items.append(FeatureItem(len(items), prompt, row["response1"], row["response2"]))
        if len(items) == n:
            break
    return items


def test_embedder_is_cached_and_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    embedder = get_embedder(device="cpu")
    assert get_embedder(device="cpu") is embedder
    texts = ["A short sentence.", "Photosynthesis turns light into chemical energy. " * 40]  # the second is truncated
    reference = SentenceTransformer(embedder.model_dir, device="cpu").encode(texts, normalize_embeddings=True)
    ours = embedder.encode(texts)
    assert ours.shape == (2, 384)
    assert np.abs(ours - reference).max() < 1e-5


def test_identical_responses_score_one(embedder: Embedder | StaticEmbedder) -> None:
    text = "Water boils at 100 °C at sea level. Marie Curie won the Nobel Prize in 1903 and again in 1911."
    [s] = lexical_scores([FeatureItem(1, "When does water boil?", text, text)], embedder=embedder)
    assert list(s) == list(LEXICAL_FEATURES)
    assert s["cosine_sim"] == pytest.approx(1.0, abs=1e-5)
    assert s["bertscore"] == pytest.approx(1.0, abs=1e-5)
    assert s["bertscore_length"] == pytest.approx(1.0, abs=1e-5)
    assert s["rouge"] == 1.0
    assert s["entity_sim"] == 1.0
    assert s["token_len_diff"] == 0.0
    assert s["len_shorter"] == s["len_longer"] == len(embedder.token_ids([text])[0])
    assert s["prompt_len"] == 5.0  # when, does, water, boil, ?


def test_unrelated_responses_score_lower(embedder: Embedder | StaticEmbedder) -> None:
    prompt = "How do plants make food?"
    a = "Plants make food through photosynthesis, using sunlight, water and carbon dioxide to produce glucose."
    close = "Through photosynthesis, plants use sunlight, water and carbon dioxide to make glucose and oxygen."
    far = "The stock market closed higher on Tuesday as investors cheered strong earnings from Apple."
    near, unrelated = lexical_scores(
        [FeatureItem(1, prompt, a, close), FeatureItem(2, prompt, a, far)], embedder=embedder
    )
    for name in ("bertscore", "cosine_sim", "rouge"):
        assert near[name] > unrelated[name] + 0.2, name
    assert unrelated["cosine_sim"] < 0.3
    assert unrelated["rouge"] < 0.15


def test_pandalm_items_batched_like_one_by_one(embedder: Embedder | StaticEmbedder) -> None:
    items = _pandalm_items(12)
    batched = lexical_scores(items, embedder=embedder, batch_size=5)
    for item, scores in zip(items[:4], batched[:4], strict=True):
        [alone] = lexical_scores([item], embedder=embedder)
        for name in LEXICAL_FEATURES:
            assert scores[name] == pytest.approx(alone[name], abs=1e-4), name
    for s in batched:
        for name in ("bertscore", "rouge", "entity_sim", "cosine_sim"):
            assert -1.0 <= s[name] <= 1.0 + 1e-6
        assert s["bertscore_length"] <= s["bertscore"] + 1e-9
        assert s["len_shorter"] <= s["len_longer"]
        assert s["token_len_diff"] == s["len_longer"] - s["len_shorter"]
    _, matrix = binarize(batched)
    assert matrix.shape == (12, 27)
    assert (matrix.sum(axis=1) == 9).all()


def test_long_responses_are_truncated_for_the_model_but_counted_in_full(embedder: Embedder | StaticEmbedder) -> None:
    long_a = "one two three " * 200  # 600 tokens
    long_b = long_a + "four five six " * 100  # differs only after the first 254 tokens
    [s] = lexical_scores([FeatureItem(1, "count", long_a, long_b)], embedder=embedder)
    assert s["len_shorter"] == 600
    assert s["len_longer"] == 900
    assert s["token_len_diff"] == 300
    assert s["cosine_sim"] == pytest.approx(1.0, abs=1e-5)
    assert s["bertscore"] == pytest.approx(1.0, abs=1e-5)
    assert s["bertscore_length"] == pytest.approx(math.exp(1 - 900 / 600), abs=1e-5)
    assert s["rouge"] < 1.0


def test_empty_and_duplicate_texts(embedder: Embedder | StaticEmbedder) -> None:
    items = [
        FeatureItem(1, "", "", ""),
        FeatureItem(2, "p", "Same text.", ""),
        FeatureItem(3, "p", "Same text.", "Same text."),
    ]
    both_empty, one_empty, same = lexical_scores(items, embedder=embedder)
    assert both_empty["bertscore"] == 1.0
    assert both_empty["rouge"] == 1.0
    assert both_empty["prompt_len"] == 0.0
    assert one_empty["bertscore"] == 0.0
    assert one_empty["bertscore_length"] == 0.0
    assert same["cosine_sim"] == pytest.approx(1.0, abs=1e-5)
    assert lexical_scores([], embedder=embedder) == []


def test_the_static_table_is_distilled_once_then_read_from_the_disk_cache(tmp_path: Path) -> None:
    base = get_embedder(device="cpu")
    first = StaticEmbedder(base, cache_dir=str(tmp_path))
    centred, unit, weights = first.table()
    assert centred.shape == (len(base.tokenizer), 384)
    assert [p.name for p in tmp_path.iterdir()] == [f"static-{first.cache_key()}.npy"]
    regular = [i for i in range(len(base.tokenizer)) if i not in set(base.tokenizer.all_special_ids)]
    assert float(centred[regular].mean(0).abs().max()) < 1e-4  # centred over the non-special entries
    assert np.allclose(unit.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    the, rare = base.tokenizer.convert_tokens_to_ids(["the", "volcano"])
    assert weights[the] < weights[rare]  # frequent tokens weigh less in the sentence embedding

    second = StaticEmbedder(base, cache_dir=str(tmp_path))
    second._distil = lambda: pytest.fail("distilled again instead of reading the cache")  # type: ignore[method-assign]
    assert np.array_equal(second.table()[0].numpy(), centred.numpy())
    (tmp_path / f"static-{first.cache_key()}.npy").write_bytes(b"not a table")
    third = StaticEmbedder(base, cache_dir=str(tmp_path))
    assert np.array_equal(third.table()[0].numpy(), centred.numpy())  # a broken cache file is rebuilt


def test_static_scores_rank_pandalm_pairs_like_the_contextual_model() -> None:
    from scipy.stats import spearmanr

    items = _pandalm_items(150)
    contextual = lexical_scores(items, embedder=get_embedder(device="cpu"))
    static = lexical_scores(items, embedder=get_static_embedder())
    for name, floor in (("bertscore", 0.85), ("bertscore_length", 0.95), ("cosine_sim", 0.7)):
        rho = spearmanr([s[name] for s in contextual], [s[name] for s in static])[0]
        assert rho > floor, (name, rho)
    for name in ("rouge", "entity_sim", "token_len_diff", "prompt_len", "len_shorter", "len_longer"):
        assert [s[name] for s in static] == [s[name] for s in contextual], name


def test_the_feature_embedder_is_chosen_by_name() -> None:
    assert get_feature_embedder() is get_static_embedder()
    assert get_feature_embedder("contextual") is get_embedder()
    with pytest.raises(ValueError, match="embeddings must be one of static, contextual"):
        get_feature_embedder("word2vec")


def test_embedder_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="device"):
        Embedder(device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        Embedder(dtype="int8")
