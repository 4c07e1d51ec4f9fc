"""Judge prompts, verdict parsing and the shown-to-canonical mapping. Pure: no database, no network."""

from __future__ import annotations

import pytest

from annotators.base import JudgeItem, JudgeRequest
from annotators.prompts import (
    CHOICE_TEMPLATE,
    DEFAULT_TEMPLATE,
    ParsedVerdict,
    PromptTemplate,
    VerdictParseError,
    build_choice_messages,
    build_messages,
    parse_verdict,
    to_canonical,
    verdict_schema,
)
from webapp.scheme import LIKERT5, LIKERT5_LABELS, RANKING, STRENGTH7, Scheme

LIKERT = Scheme(scale=LIKERT5, aspects=("overall", "helpful"))
STRENGTH = Scheme(scale=STRENGTH7, aspects=("overall",))
RANKED = Scheme(kind=RANKING, aspects=("overall",))
PAIR = JudgeItem(7, ({"role": "user", "content": "What is 2+2?"},), ("FIRST-RESPONSE", "SECOND-RESPONSE"))


def user_text(messages: list[dict[str, str]]) -> str:
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


# --- prompts ---------------------------------------------------------------------------------------


def test_the_pairwise_prompt_shows_the_responses_in_the_shown_order() -> None:
    as_imported = user_text(build_messages(JudgeRequest(PAIR, (0, 1)), LIKERT))
    swapped = user_text(build_messages(JudgeRequest(PAIR, (1, 0)), LIKERT))

    assert as_imported.index("FIRST-RESPONSE") < as_imported.index("SECOND-RESPONSE")
    assert swapped.index("SECOND-RESPONSE") < swapped.index("FIRST-RESPONSE")
    assert "[The Start of Response A]\nSECOND-RESPONSE\n[The End of Response A]" in swapped
    assert "[The Start of Response B]\nFIRST-RESPONSE\n[The End of Response B]" in swapped


def test_a_multi_turn_conversation_is_shown_turn_by_turn_before_the_responses() -> None:
    item = JudgeItem(
        1,
        (
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "Seven."},
            {"role": "user", "content": "Another one?"},
        ),
        ("Eleven.", "Nine."),
    )
    text = user_text(build_messages(JudgeRequest(item, (0, 1)), LIKERT))

    assert "[User]\nName a prime.\n\n[Assistant]\nSeven.\n\n[User]\nAnother one?" in text
    assert text.index("Another one?") < text.index("Response A")


def test_the_likert5_prompt_asks_for_one_multipref_label_per_aspect_with_a_rationale_first() -> None:
    text = user_text(build_messages(JudgeRequest(PAIR, (0, 1)), LIKERT))

    for label in LIKERT5_LABELS:
        assert f"- {label}:" in text
    assert "- overall:" in text
    assert "- helpful:" in text
    assert text.endswith("overall: <label>\nhelpful: <label>")
    assert 'line starting with "Rationale:"' in text


def test_the_strength7_prompt_explains_that_negative_numbers_favour_response_a() -> None:
    text = user_text(build_messages(JudgeRequest(PAIR, (0, 1)), STRENGTH))

    assert "- -3: Response A is much better than Response B" in text
    assert "- 3: Response B is much better than Response A" in text
    assert "Negative numbers favour Response A" in text
    assert text.endswith("overall: <number>")


def test_only_the_asked_aspects_appear_and_criteria_come_first() -> None:
    text = user_text(
        build_messages(JudgeRequest(PAIR, (0, 1)), LIKERT, aspects=["truthful"], criteria="Prefer short answers.")
    )

    assert text.startswith("Guidelines for this judgement:\nPrefer short answers.")
    assert "- truthful:" in text
    assert "helpful" not in text


def test_braces_in_the_item_text_are_shown_as_they_are() -> None:
    item = JudgeItem(1, ({"role": "user", "content": "Format {name} with {0}"},), ('{"a": 1}', "}{"))
    text = user_text(build_messages(JudgeRequest(item, (0, 1)), LIKERT))

    assert "Format {name} with {0}" in text
    assert '{"a": 1}' in text


def test_a_structured_prompt_asks_for_json_and_its_schema_lists_the_scale_labels() -> None:
    text = user_text(build_messages(JudgeRequest(PAIR, (0, 1)), LIKERT, structured=True))
    schema = verdict_schema(LIKERT, LIKERT.aspects, 2)

    assert "Reply with only a JSON object" in text
    assert '"labels"' in text
    assert schema["required"] == ["rationale", "labels"]
    assert schema["properties"]["labels"]["required"] == ["overall", "helpful"]
    assert schema["properties"]["labels"]["properties"]["helpful"]["enum"] == list(LIKERT5_LABELS)
    assert schema["properties"]["labels"]["additionalProperties"] is False


def test_the_strength7_schema_takes_integers_from_minus_three_to_three() -> None:
    label = verdict_schema(STRENGTH, ["overall"], 2)["properties"]["labels"]["properties"]["overall"]

    assert label == {"type": "integer", "enum": [-3, -2, -1, 0, 1, 2, 3]}


def test_ranking_prompts_and_schemas_use_the_shown_letters() -> None:
    item = JudgeItem(3, ({"role": "user", "content": "q"},), ("zero", "one", "two"))
    text = user_text(build_messages(JudgeRequest(item, (2, 0, 1)), RANKED))
    schema = verdict_schema(RANKED, ["overall"], 3)

    assert "Rank the 3 responses (A, B, C)" in text
    assert "[The Start of Response A]\ntwo\n" in text
    assert text.endswith("ranking: <best letter> > ... > <worst letter>")
    assert schema["properties"]["ranking"]["items"]["enum"] == ["A", "B", "C"]
    assert schema["properties"]["ranking"]["minItems"] == schema["properties"]["ranking"]["maxItems"] == 3


def test_a_pairwise_prompt_refuses_three_shown_responses() -> None:
    item = JudgeItem(3, ({"role": "user", "content": "q"},), ("zero", "one", "two"))
    with pytest.raises(ValueError, match="2 shown responses"):
        build_messages(JudgeRequest(item, (0, 1, 2)), LIKERT)


def test_the_choice_prompt_names_one_aspect_and_ends_asking_for_only_the_letter() -> None:
    messages = build_choice_messages(JudgeRequest(PAIR, (1, 0)), LIKERT, "truthful")
    text = user_text(messages)

    assert text.endswith("Answer with only the letter A or B.")
    assert "judged on truthful (which response is more accurate" in text
    assert text.index("SECOND-RESPONSE") < text.index("FIRST-RESPONSE")
    with pytest.raises(ValueError, match="pairwise"):
        build_choice_messages(JudgeRequest(PAIR, (0, 1)), RANKED, "overall")


def test_the_prompt_version_is_a_12_hex_hash_of_the_template_and_the_settings() -> None:
    version = DEFAULT_TEMPLATE.version("gpt-4o", "verdict")

    assert len(version) == 12
    assert int(version, 16) >= 0
    assert version == DEFAULT_TEMPLATE.version("gpt-4o", "verdict")
    assert version != DEFAULT_TEMPLATE.version("gpt-4o-mini", "verdict")
    assert version != CHOICE_TEMPLATE.version("gpt-4o", "verdict")
    assert DEFAULT_TEMPLATE.version("ab", "c") != DEFAULT_TEMPLATE.version("a", "bc")
    edited = PromptTemplate("verdict", DEFAULT_TEMPLATE.system + " Be brief.", DEFAULT_TEMPLATE.user)
    assert edited.version("gpt-4o", "verdict") != version


# --- parsing -----------------------------------------------------------------------------------------


def test_aspect_lines_are_read_in_any_case_with_spaces_and_markdown() -> None:
    text = "Rationale: A is more precise.\n**Overall**: a is slightly better\n- helpful:  B_IS_CLEARLY_BETTER"

    parsed = parse_verdict(text, LIKERT, LIKERT.aspects, 2)

    assert parsed.labels_shown == {"overall": "A-is-slightly-better", "helpful": "B-is-clearly-better"}
    assert parsed.rationale == "A is more precise."
    assert parsed.ranking_shown is None


def test_a_json_verdict_is_read_inside_a_fence_among_prose() -> None:
    text = (
        'Sure! Here is my verdict:\n```json\n{"rationale": "B cites sources.", '
        '"labels": {"overall": "B-is-slightly-better", "helpful": "Tie"}}\n```\nHope that helps.'
    )

    parsed = parse_verdict(text, LIKERT, LIKERT.aspects, 2)

    assert parsed.labels_shown == {"overall": "B-is-slightly-better", "helpful": "Tie"}
    assert parsed.rationale == "B cites sources."


def test_a_flat_json_verdict_with_integers_is_read_on_strength7() -> None:
    parsed = parse_verdict('{"reasoning": "close", "overall": 2}', STRENGTH, ["overall"], 2)

    assert parsed.labels_shown == {"overall": 2}
    assert parsed.rationale == "close"


def test_a_bare_mt_bench_verdict_is_the_weakest_win_and_answers_overall_only() -> None:
    one_aspect = Scheme(aspects=("overall",))

    assert parse_verdict("A is better. [[A]]", one_aspect, ["overall"], 2).labels_shown == {
        "overall": "A-is-slightly-better"
    }
    assert parse_verdict("[[B]]", STRENGTH, ["overall"], 2).labels_shown == {"overall": 1}
    assert parse_verdict("[[C]]", one_aspect, ["overall"], 2).labels_shown == {"overall": "Tie"}
    assert parse_verdict("[[C]]", STRENGTH, ["overall"], 2).labels_shown == {"overall": 0}
    with pytest.raises(VerdictParseError, match="no verdict for helpful"):
        parse_verdict("My final verdict: [[A]]", LIKERT, LIKERT.aspects, 2)


def test_a_bare_verdict_answers_a_single_aspect_even_when_it_is_not_overall() -> None:
    scheme = Scheme(aspects=("harmless",))

    parsed = parse_verdict("Both are safe.\nFinal verdict: Tie", scheme, ["harmless"], 2)

    assert parsed.labels_shown == {"harmless": "Tie"}
    assert parsed.rationale == "Both are safe."


def test_arena_hard_comparisons_give_the_strongest_or_the_weakest_win() -> None:
    assert parse_verdict("[[A>>B]]", STRENGTH, ["overall"], 2).labels_shown == {"overall": -3}
    assert parse_verdict("overall: B>A", STRENGTH, ["overall"], 2).labels_shown == {"overall": 1}
    assert parse_verdict("overall: [[B>>A]]\nhelpful: A=B", LIKERT, LIKERT.aspects, 2).labels_shown == {
        "overall": "B-is-clearly-better",
        "helpful": "Tie",
    }


def test_strength7_integers_are_read_with_plus_signs_and_unicode_minus() -> None:
    def read(value: str) -> object:
        return parse_verdict(f"overall: {value}", STRENGTH, ["overall"], 2).labels_shown["overall"]

    assert read("-2") == -2
    assert read("\u22123 (A is much better)") == -3
    assert read("+1") == 1
    assert read("**0**") == 0


def test_the_last_readable_line_for_an_aspect_wins() -> None:
    text = "overall: both answers are fine but A explains more\nmore thoughts\noverall: A-is-clearly-better"

    parsed = parse_verdict(text, Scheme(aspects=("overall",)), ["overall"], 2)

    assert parsed.labels_shown == {"overall": "A-is-clearly-better"}


def test_unreadable_or_off_scale_verdicts_raise_naming_the_aspect() -> None:
    with pytest.raises(VerdictParseError, match=r"overall: cannot read '5' on the strength7 scale"):
        parse_verdict("overall: 5", STRENGTH, ["overall"], 2)
    with pytest.raises(VerdictParseError, match=r"overall: 'A-is-clearly-better' is not on the strength7 scale"):
        parse_verdict('{"labels": {"overall": "A-is-clearly-better"}}', STRENGTH, ["overall"], 2)
    with pytest.raises(VerdictParseError, match=r"overall: 3 is not on the likert5 scale"):
        parse_verdict('{"labels": {"overall": 3, "helpful": "Tie"}}', LIKERT, LIKERT.aspects, 2)
    with pytest.raises(VerdictParseError, match="no verdict for overall, helpful"):
        parse_verdict("I cannot decide between them.", LIKERT, LIKERT.aspects, 2)
    with pytest.raises(VerdictParseError, match="empty output"):
        parse_verdict("  \n", LIKERT, LIKERT.aspects, 2)


def test_rankings_are_read_from_lines_brackets_and_json() -> None:
    assert parse_verdict("Rationale: C is best.\nranking: C > A > B", RANKED, ["overall"], 3) == ParsedVerdict(
        {}, [2, 0, 1], "C is best."
    )
    assert parse_verdict("I rank them [[B, C, A]]", RANKED, ["overall"], 3).ranking_shown == [1, 2, 0]
    assert parse_verdict('{"rationale": "x", "ranking": ["B", "A"]}', RANKED, ["overall"], 2).ranking_shown == [1, 0]
    with pytest.raises(VerdictParseError, match="ranking must list each of A, B, C exactly once"):
        parse_verdict('{"ranking": ["A", "A", "B"]}', RANKED, ["overall"], 3)
    with pytest.raises(VerdictParseError, match="ranking must list each of A, B, C exactly once"):
        parse_verdict("ranking: A > B", RANKED, ["overall"], 3)


# --- shown order -> canonical order -----------------------------------------------------------------


def test_a_verdict_on_the_swapped_order_is_mirrored_on_both_scales() -> None:
    likert = ParsedVerdict({"overall": "A-is-clearly-better", "helpful": "B-is-slightly-better"}, None, "")
    strength = ParsedVerdict({"overall": -2}, None, "")

    assert to_canonical(likert, (1, 0)) == ({"overall": "B-is-clearly-better", "helpful": "A-is-slightly-better"}, None)
    assert to_canonical(likert, (0, 1))[0] == likert.labels_shown
    assert to_canonical(ParsedVerdict({"overall": "Tie"}, None, ""), (1, 0))[0] == {"overall": "Tie"}
    assert to_canonical(strength, (1, 0))[0] == {"overall": 2}
    assert to_canonical(strength, (0, 1))[0] == {"overall": -2}


def test_ranking_letters_become_the_canonical_indices_shown_under_them() -> None:
    # Shown A is canonical 2, B is 0, C is 1; the judge ranked C, A, B.
    assert to_canonical(ParsedVerdict({}, [2, 0, 1], ""), (2, 0, 1)) == ({}, [1, 2, 0])


def test_a_reasoning_models_think_block_is_not_read_as_the_verdict() -> None:
    text = "<think>\noverall: A-is-clearly-better? No.\n</think>\nRationale: B is right.\noverall: B-is-slightly-better"

    parsed = parse_verdict(text, Scheme(aspects=("overall",)), ["overall"], 2)

    assert parsed.labels_shown == {"overall": "B-is-slightly-better"}
    assert parsed.rationale == "B is right."
