"""Dead-letter ids as operators write them (no shell quoting), and choosing by id or number."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from worker.ops.deadletters import ChoiceError, DeadLetterFilter, external_id, internal_id

E164 = "+972501234567"
#: Every form a target takes: a provider alone, or with its agent or database (SafeId:
#: letters, digits, '.', '_', '-').
TARGETS = ["voicenter", "weya", "voodoosms", "phonely:agent1", "phonely:agent-2.b_c",
           "daktela:Global"]  # fmt: skip


@pytest.mark.parametrize("target", TARGETS)
def test_an_id_round_trips_and_the_old_form_still_works(target: str) -> None:
    member = f"{target}|{E164}"
    shown = external_id(member)
    assert shown == f"{target}:{E164}"
    assert internal_id(shown, "IL") == member
    assert external_id(internal_id(shown, "IL")) == shown
    assert internal_id(member, "IL") == member  # scripts written with the old id


@pytest.mark.parametrize("target", TARGETS)
def test_an_id_takes_a_national_number(target: str) -> None:
    assert internal_id(f"{target}:0501234567", "IL") == f"{target}|{E164}"
    assert internal_id(f"{target}|050-123-4567", "IL") == f"{target}|{E164}"


@pytest.mark.parametrize("target", TARGETS)
def test_an_id_needs_no_quoting_in_a_shell(target: str) -> None:
    shown = external_id(f"{target}|{E164}")
    assert shlex.quote(shown) == shown
    assert shlex.quote(f"{target}|{E164}") != f"{target}|{E164}"  # why the id changed


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_shell_passes_an_id_as_one_word_unchanged(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here")
    ids = [external_id(f"{t}|{E164}") for t in TARGETS]
    # Unquoted, as an operator pastes it after `optout dlq show`.
    script = "printf '%s\\n' " + " ".join(ids)
    words = subprocess.run([shell, "-c", script], capture_output=True, text=True, check=True)
    assert words.stdout.splitlines() == ids


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("voicenter", "not_a_dead_letter_id"),
        (f":{E164}", "not_a_dead_letter_id"),
        ("voicenter:", "not_a_dead_letter_id"),
        ("", "not_a_dead_letter_id"),
        ("voicenter:hello", "contains_letters"),
        ("phonely:agent1", "contains_letters"),  # a target without its number
        ("voicenter|12", "too_short"),
    ],
)
def test_an_id_that_names_no_dead_letter_is_refused_with_the_reason(
    given: str, reason: str
) -> None:
    with pytest.raises(ChoiceError) as refused:
        internal_id(given, "IL")
    assert refused.value.reason == reason
    assert repr(given) in refused.value.message


def test_a_filter_in_store_terms_reads_national_numbers_and_ids() -> None:
    flt = DeadLetterFilter(phone="0501234567", ids=("voicenter:0501234567",))
    stored = flt.in_store_terms("IL")
    assert stored.phone == E164
    assert stored.ids == (f"voicenter|{E164}",)
    entry = {"id": f"voicenter|{E164}", "phone": E164, "target": "voicenter"}
    assert stored.matches(entry, now_ms=0)
    assert not flt.matches(entry, now_ms=0)  # as written it would silently match nothing
    assert DeadLetterFilter(provider="voicenter").in_store_terms("IL").provider == "voicenter"


def test_a_filter_phone_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ChoiceError) as refused:
        DeadLetterFilter(phone="not-a-number").in_store_terms("IL")
    assert refused.value.reason == "contains_letters"
    assert "'not-a-number' is not a phone number" in refused.value.message
