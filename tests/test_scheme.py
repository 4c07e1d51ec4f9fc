"""The one annotation validator (webapp.scheme): pure code, no database."""

from __future__ import annotations

from typing import Any

import pytest

from webapp import scheme as sch
from webapp.scheme import Scheme, SchemeError, validate_annotation, validate_scheme_config

ONE_ASPECT = Scheme(aspects=("overall",), ask_confidence=False)
STRENGTH = Scheme(scale=sch.STRENGTH7, aspects=("overall",), ask_confidence=False)


def problems(scheme: Scheme, data: dict[str, Any], *, n: int = 2, complete: bool = False) -> list[tuple[str, str]]:
    with pytest.raises(SchemeError) as info:
        validate_annotation(scheme, data, n_responses=n, complete=complete)
    return info.value.problems


def fields(scheme: Scheme, data: dict[str, Any], **kwargs: Any) -> set[str]:
    return {f for f, _ in problems(scheme, data, **kwargs)}


def full_answer(scheme: Scheme, label: Any = "A-is-slightly-better") -> dict[str, Any]:
    return {
        "preferences": dict.fromkeys(scheme.aspects, label),
        "confidence": {scheme.aspects[0]: "fairly-confident"},
        "justification": "A answers the question; B does not.",
    }


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("label", sch.LIKERT5_LABELS)
def test_every_likert5_label_is_accepted(label):
    payload = validate_annotation(ONE_ASPECT, {"preferences": {"overall": label}}, n_responses=2, complete=False)
    assert payload.preferences == {"overall": label}


@pytest.mark.parametrize("label", ["A-is-better", "tie", "", 1, 0, "a-is-clearly-better"])
def test_a_label_off_the_likert5_scale_is_refused(label):
    found = problems(ONE_ASPECT, {"preferences": {"overall": label}})
    assert found[0][0] == "preferences.overall"
    assert "likert5" in found[0][1]


@pytest.mark.parametrize("label", sch.STRENGTH7_LABELS)
def test_every_strength7_label_is_accepted(label):
    payload = validate_annotation(STRENGTH, {"preferences": {"overall": label}}, n_responses=2, complete=False)
    assert payload.preferences == {"overall": label}
    assert type(payload.preferences["overall"]) is int


@pytest.mark.parametrize("label", [4, -4, 10, "Tie", "A-is-clearly-better"])
def test_a_label_off_the_strength7_scale_is_refused(label):
    assert fields(STRENGTH, {"preferences": {"overall": label}}) == {"preferences.overall"}


@pytest.mark.parametrize("label", [True, False])
def test_a_boolean_is_never_a_strength7_label(label):
    # True == 1 and False == 0 in Python; the validator must still refuse them.
    found = problems(STRENGTH, {"preferences": {"overall": label}})
    assert found == [("preferences.overall", "Value error, a boolean is not a label")]


def test_a_boolean_is_not_a_likert5_label_either():
    assert fields(ONE_ASPECT, {"preferences": {"overall": True}}) == {"preferences.overall"}


def test_a_likert5_label_is_refused_on_a_strength7_project_and_the_other_way_round():
    assert fields(STRENGTH, {"preferences": {"overall": "Tie"}}) == {"preferences.overall"}
    assert fields(ONE_ASPECT, {"preferences": {"overall": 0}}) == {"preferences.overall"}


# --- aspects and completeness -----------------------------------------------------------------


def test_an_unknown_aspect_is_refused_and_the_project_aspects_listed():
    found = problems(Scheme(), {"preferences": {"overall": "Tie", "funny": "Tie"}})
    assert found == [("preferences.funny", "unknown aspect (project aspects: overall, helpful, truthful, harmless)")]


def test_an_incomplete_import_may_carry_only_some_aspects():
    payload = validate_annotation(Scheme(), {"preferences": {"overall": "Tie"}}, n_responses=2, complete=False)
    assert payload.preferences == {"overall": "Tie"}


def test_a_complete_annotation_needs_every_aspect():
    data = full_answer(Scheme())
    del data["preferences"]["truthful"]
    del data["preferences"]["harmless"]
    found = dict(problems(Scheme(), data, complete=True))
    assert found["preferences"] == "missing aspects: truthful, harmless"


def test_a_complete_annotation_with_every_aspect_passes():
    scheme = Scheme()
    payload = validate_annotation(scheme, full_answer(scheme), n_responses=2, complete=True)
    assert set(payload.preferences) == set(scheme.aspects)


def test_an_annotation_needs_at_least_one_preference():
    assert ("preferences", "at least one preference is needed") in problems(ONE_ASPECT, {})


def test_a_complete_annotation_needs_a_confidence_when_the_project_asks():
    scheme = Scheme(aspects=("overall",), ask_confidence=True)
    data = full_answer(scheme)
    del data["confidence"]
    assert ("confidence", "a confidence answer is required") in problems(scheme, data, complete=True)
    # Imports are not asked for what their source never had.
    validate_annotation(scheme, data, n_responses=2, complete=False)


def test_no_confidence_is_needed_when_the_project_does_not_ask():
    data = full_answer(ONE_ASPECT)
    del data["confidence"]
    validate_annotation(ONE_ASPECT, data, n_responses=2, complete=True)


def test_confidence_must_use_the_known_words_and_aspects():
    data = {"preferences": {"overall": "Tie"}, "confidence": {"overall": "sure", "style": "fairly-confident"}}
    assert fields(ONE_ASPECT, data) == {"confidence.overall", "confidence.style"}


def test_a_required_justification_must_be_given():
    scheme = Scheme(aspects=("overall",), ask_confidence=False, justification_required=True)
    data = full_answer(scheme)
    data["justification"] = "   "
    assert ("justification", "a justification is required") in problems(scheme, data, complete=True)


def test_a_required_justification_must_reach_the_minimum_length_after_trimming():
    scheme = Scheme(
        aspects=("overall",), ask_confidence=False, justification_required=True, justification_min_length=20
    )
    data = full_answer(scheme)
    data["justification"] = "  too short   "
    assert ("justification", "needs at least 20 characters (has 9)") in problems(scheme, data, complete=True)
    data["justification"] = "B invents a citation; A is right."
    validate_annotation(scheme, data, n_responses=2, complete=True)


def test_a_justification_is_optional_when_the_project_does_not_require_it():
    data = {"preferences": {"overall": "Tie"}}
    validate_annotation(ONE_ASPECT, data, n_responses=2, complete=True)


def test_unknown_payload_fields_are_refused():
    assert fields(ONE_ASPECT, {"preferences": {"overall": "Tie"}, "mood": "happy"}) == {"mood"}


def test_negative_time_is_refused():
    assert "time_spent" in fields(ONE_ASPECT, {"preferences": {"overall": "Tie"}, "time_spent": -3})


def test_every_problem_is_reported_at_once():
    scheme = Scheme(aspects=("overall",), ask_confidence=True, justification_required=True)
    data = {"preferences": {"overall": "nope", "extra": "Tie"}, "flags": ["weird"]}
    assert fields(scheme, data, complete=True) == {
        "preferences.overall",
        "preferences.extra",
        "confidence",
        "justification",
        "flags",
    }


# --- rankings ---------------------------------------------------------------------------------

RANKING = Scheme(kind=sch.RANKING, aspects=("overall",), ask_confidence=False)
RANKING_TIES = Scheme(kind=sch.RANKING, aspects=("overall",), ask_confidence=False, allow_ties=True)


@pytest.mark.parametrize("ranking", [[2, 0, 1], [0, 1, 2], [1, 2, 0]])
def test_a_ranking_that_is_a_permutation_is_accepted(ranking):
    payload = validate_annotation(RANKING, {"ranking": ranking}, n_responses=3, complete=True)
    assert payload.ranking == ranking


@pytest.mark.parametrize("ranking", [[0, 1], [0, 1, 1], [0, 1, 2, 3], [1, 2, 3], [], [0, 0, 2]])
def test_a_ranking_that_is_not_a_permutation_is_refused(ranking):
    found = problems(RANKING, {"ranking": ranking}, n=3)
    assert found == [("ranking", "must list each response index 0..2 exactly once")]


def test_a_ranking_project_needs_a_ranking():
    assert ("ranking", "a ranking is required") in problems(RANKING, {}, n=3)


def test_a_ranking_project_does_not_take_pairwise_preferences():
    found = problems(RANKING, {"ranking": [0, 1], "preferences": {"overall": "Tie"}})
    assert found == [("preferences", "ranking projects answer with a ranking, not pairwise preferences")]


def test_ties_are_refused_unless_the_project_allows_them():
    tied = {"ranking": [[0, 2], 1]}
    assert problems(RANKING, tied, n=3) == [("ranking", "this project does not allow ties")]
    payload = validate_annotation(RANKING_TIES, tied, n_responses=3, complete=True)
    assert sch.flatten_ranking(payload.ranking) == [0, 2, 1]


def test_a_one_element_group_is_not_a_tie():
    validate_annotation(RANKING, {"ranking": [[1], 0]}, n_responses=2, complete=True)


def test_a_tied_ranking_must_still_be_a_permutation():
    assert fields(RANKING_TIES, {"ranking": [[0, 1], 1]}, n=3) == {"ranking"}


def test_a_pairwise_item_may_carry_a_ranking_instead_of_preferences():
    validate_annotation(ONE_ASPECT, {"ranking": [1, 0]}, n_responses=2, complete=False)
    assert fields(ONE_ASPECT, {"ranking": [1, 1]}) == {"ranking"}


# --- ratings, reasons, flags ------------------------------------------------------------------

RATED = Scheme(aspects=("overall",), ask_confidence=False, rating_attributes=("helpfulness", "correctness"))


@pytest.mark.parametrize("score", [0, 1, 2, 3, 4])
def test_ratings_from_0_to_4_are_accepted_for_configured_attributes(score):
    data = {"preferences": {"overall": "Tie"}, "ratings": {0: {"helpfulness": score}, 1: {"correctness": score}}}
    payload = validate_annotation(RATED, data, n_responses=2, complete=True)
    assert payload.ratings[0] == {"helpfulness": score}


@pytest.mark.parametrize("score", [-1, 5, 40])
def test_ratings_outside_0_to_4_are_refused(score):
    found = problems(RATED, {"preferences": {"overall": "Tie"}, "ratings": {0: {"helpfulness": score}}})
    assert found == [("ratings.0.helpfulness", f"{score} is outside 0..4")]


def test_a_rating_for_an_attribute_the_project_does_not_ask_is_refused():
    found = problems(RATED, {"preferences": {"overall": "Tie"}, "ratings": {1: {"verbosity": 2}}})
    assert found == [("ratings.1.verbosity", "not a rating attribute of this project")]


def test_no_ratings_are_accepted_when_the_project_asks_none():
    assert fields(ONE_ASPECT, {"preferences": {"overall": "Tie"}, "ratings": {0: {"helpfulness": 3}}}) == {
        "ratings.0.helpfulness"
    }


def test_a_rating_for_a_response_that_does_not_exist_is_refused():
    found = fields(RATED, {"preferences": {"overall": "Tie"}, "ratings": {2: {"helpfulness": 3}}})
    assert "ratings.2" in found


def test_json_string_keys_for_ratings_are_read_as_response_indices():
    payload = validate_annotation(
        RATED, {"preferences": {"overall": "Tie"}, "ratings": {"1": {"correctness": 4}}}, n_responses=2, complete=True
    )
    assert payload.ratings == {1: {"correctness": 4}}


def test_checklist_reasons_are_restricted_when_the_project_lists_them():
    scheme = Scheme(aspects=("overall", "truthful"), ask_confidence=False, reasons={"truthful": ("made-up facts",)})
    ok = {"preferences": {"overall": "Tie"}, "reasons": {"truthful": ["made-up facts"]}}
    validate_annotation(scheme, ok, n_responses=2, complete=False)
    bad = {"preferences": {"overall": "Tie"}, "reasons": {"truthful": ["made-up facts", "too long"]}}
    assert problems(scheme, bad) == [("reasons.truthful", "unknown reasons: 'too long'")]


def test_free_reasons_are_accepted_for_an_aspect_without_a_checklist():
    scheme = Scheme(aspects=("overall",), ask_confidence=False)
    validate_annotation(
        scheme, {"preferences": {"overall": "Tie"}, "reasons": {"overall": ["anything"]}}, n_responses=2, complete=False
    )


def test_reasons_and_own_reasons_for_unknown_aspects_are_refused():
    data = {"preferences": {"overall": "Tie"}, "reasons": {"style": ["x"]}, "own_reasons": {"tone": "y"}}
    assert fields(ONE_ASPECT, data) == {"reasons.style", "own_reasons.tone"}


@pytest.mark.parametrize("flag", sch.FLAGS)
def test_known_flags_are_accepted(flag):
    validate_annotation(ONE_ASPECT, {"preferences": {"overall": "Tie"}, "flags": [flag]}, n_responses=2, complete=True)


def test_an_unknown_flag_is_refused():
    found = problems(ONE_ASPECT, {"preferences": {"overall": "Tie"}, "flags": ["unsafe", "spam"]})
    assert found == [("flags", "'spam' is not one of unsafe, broken-prompt, both-bad")]


def test_an_already_parsed_payload_is_validated_too():
    payload = sch.AnnotationPayload(preferences={"overall": "bogus"})
    with pytest.raises(SchemeError):
        validate_annotation(ONE_ASPECT, payload, n_responses=2, complete=False)


def test_the_error_message_names_every_field():
    with pytest.raises(SchemeError, match=r"preferences\.overall: .*; flags: "):
        validate_annotation(
            ONE_ASPECT, {"preferences": {"overall": "x"}, "flags": ["x"]}, n_responses=2, complete=False
        )


# --- validate_scheme_config -------------------------------------------------------------------


def config(**overrides: Any) -> list[tuple[str, str]]:
    settings: dict[str, Any] = {
        "kind": sch.PAIRWISE,
        "scale": sch.LIKERT5,
        "aspects": ["overall", "helpful"],
        "reasons": {},
        "rating_attributes": [],
    }
    settings.update(overrides)
    return validate_scheme_config(**settings)


def test_a_sound_scheme_config_has_no_problems():
    assert config() == []
    assert config(kind=sch.RANKING, scale=sch.STRENGTH7, rating_attributes=list(sch.RATING_ATTRIBUTES)) == []
    assert config(aspects=["well_formed-1"], reasons={"well_formed-1": ["a", "b"]}) == []


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"kind": "triplet"}, "kind", "'triplet' is not one of pairwise, ranking"),
        ({"scale": "likert10"}, "scale", "'likert10' is not one of likert5, strength7"),
        ({"aspects": []}, "aspects", "at least one aspect is needed"),
        ({"aspects": ["overall", "overall"]}, "aspects", "aspects must be unique"),
        ({"aspects": ["over all"]}, "aspects", "'over all' must be letters"),
        ({"aspects": ["ok", ""]}, "aspects", "'' must be letters"),
        ({"aspects": ["<b>"]}, "aspects", "'<b>' must be letters"),
        ({"reasons": {"style": ["x"]}}, "reasons", "unknown aspect 'style'"),
        ({"reasons": {"overall": "not a list"}}, "reasons", "must be a list of non-empty strings"),
        ({"reasons": {"overall": ["ok", ""]}}, "reasons", "must be a list of non-empty strings"),
        ({"reasons": {"overall": [3]}}, "reasons", "must be a list of non-empty strings"),
        ({"rating_attributes": ["humour"]}, "rating_attributes", "'humour' is not one of helpfulness"),
    ],
)
def test_scheme_config_problems_are_named(overrides, field, fragment):
    found = config(**overrides)
    assert any(f == field and fragment in m for f, m in found), found


def test_every_scheme_config_problem_is_listed_at_once():
    found = config(kind="x", scale="y", aspects=[], rating_attributes=["z"])
    assert {f for f, _ in found} == {"kind", "scale", "aspects", "rating_attributes"}


def test_booleans_are_not_response_indices_in_a_ranking():
    with pytest.raises(SchemeError) as exc:
        validate_annotation(Scheme(kind="ranking"), {"ranking": [True, 0, 2]}, n_responses=3, complete=False)
    assert any(field.startswith("ranking") for field, _ in exc.value.problems)
