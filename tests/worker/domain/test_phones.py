"""Phone normalisation: conventions, rejections with reasons, provider formats."""

from __future__ import annotations

import types

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain import phones
from worker.domain.phones import (
    REJECTION_REASONS,
    Convention,
    Normalised,
    NumberFormat,
    Rejected,
    mask,
    normalise,
    normalise_own_numbers,
    render,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+972501234567", "+972501234567"),
        ("0501234567", "+972501234567"),
        ("050-123-4567", "+972501234567"),
        ("972501234567", "+972501234567"),
        (972501234567, "+972501234567"),
        ("972501234567.0", "+972501234567"),
        ("447911123456", "+447911123456"),  # the international reading is the valid one
        ("+44 7911 123456", "+447911123456"),
        ("0722776772", "+972722776772"),
    ],
)
def test_national_convention(raw: object, expected: str) -> None:
    result = normalise(raw, "IL")
    assert isinstance(result, Normalised), result
    assert result.e164 == expected


@pytest.mark.parametrize(
    "raw",
    [
        "\u200b0501234567",  # zero-width space
        "\ufeff0501234567",  # byte order mark (a CSV from Excel)
        "\u200e050-123-4567\u200f",  # left-to-right and right-to-left marks
        "\u2066+972 50 123 4567\u2069",  # bidi isolates (copied from a Hebrew screen)
        "\u061c0501234567",  # Arabic letter mark
        "\u202b050-1234567\u202c",  # embedding
        "\u00ad0501234567",  # soft hyphen
        "050\u2013123\u20144567",  # en and em dashes
        "050\u2212123\u20114567",  # minus sign, non-breaking hyphen
        "050\u2009123\u202f4567",  # thin and narrow no-break spaces
        "050\u3000123 4567",  # ideographic space
        "050.123.4567",  # dots as separators
        "050.1234567",
        "+972.50.123.4567",
        "\u0660\u0665\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic-Indic digits
    ],
)
def test_what_copying_and_pasting_brings_along_is_read_as_the_number(raw: str) -> None:
    # Issue 13, item 13: each of these was refused (not_a_number or decimal_number).
    result = normalise(raw, "IL")
    assert isinstance(result, Normalised), result
    assert result.e164 == "+972501234567"


def test_a_trunk_prefix_before_the_country_code_is_read_as_the_international_number() -> None:
    # Issue 13, item 13: "0" then "972..." became +972972501234567, a number nobody has.
    for convention in Convention:
        result = normalise("0972501234567", "IL", convention)
        assert isinstance(result, Normalised), result
        assert result.e164 == "+972501234567"
        assert "trunk_prefix_removed" in result.flags
    other = normalise("0447911123456", "IL")
    assert isinstance(other, Normalised) and other.e164 == "+447911123456"
    # A valid national number that happens to start so stays national (09-7234567).
    national = normalise("097234567", "IL")
    assert isinstance(national, Normalised) and national.e164 == "+97297234567"


def test_a_trunk_prefix_before_an_impossible_international_number_is_refused() -> None:
    result = normalise("09725012345678901", "IL")
    assert isinstance(result, Rejected)
    assert result.reason in ("trunk_prefix_with_country_code", "too_long")


def test_only_short_inputs_are_cached() -> None:
    from worker.domain import phones

    before = phones._cached.cache_info().currsize
    normalise("0" * 5_000_000, "IL")
    normalise("x" * 100, "IL")
    assert phones._cached.cache_info().currsize == before


def test_an_unknown_range_is_accepted_and_flagged() -> None:
    result = normalise("0501234567", "IL")
    assert isinstance(result, Normalised)
    assert "unknown_range" in result.flags


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12125551234", "+12125551234"),  # not +97212125551234
        ("+12125551234", "+12125551234"),
        ("0501234567", "+972501234567"),  # falls back to a national parse
    ],
)
def test_international_convention(raw: str, expected: str) -> None:
    result = normalise(raw, "IL", Convention.INTERNATIONAL)
    assert isinstance(result, Normalised), result
    assert result.e164 == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0501234567abc", "contains_letters"),
        ("1-800-FLOWERS", "contains_letters"),
        ("sip:101@pbx.example", "sip_address"),
        ("972501234567.5", "decimal_number"),
        ("972501234567.25", "decimal_number"),
        (12.5, "decimal_number"),
        ("101", "too_short"),
        ("12", "too_short"),
        ("+999123456789", "invalid_country_code"),
        ("#*#", "not_a_number"),
        (None, "not_a_number"),
        (True, "not_a_number"),
        ("1" * 30, "too_long"),
    ],
)
def test_rejections_carry_a_reason(raw: object, reason: str) -> None:
    result = normalise(raw, "IL")
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert result.reason in REJECTION_REASONS


def test_own_numbers_are_never_the_customer() -> None:
    own = normalise_own_numbers(["0722776772"], "IL")
    result = normalise("+972722776772", "IL", own_numbers=own)
    assert isinstance(result, Rejected)
    assert result.reason == "own_number"


def test_render_per_provider_format() -> None:
    assert render("+972501234567", NumberFormat.DIGITS) == "972501234567"
    assert render("+972501234567", NumberFormat.PLUS) == "+972501234567"
    assert render("+972501234567", NumberFormat.INTEGER) == 972501234567


def test_mask_hides_the_middle() -> None:
    assert mask("+972501234567") == "+97250***4567"


def test_a_repeated_number_is_parsed_once() -> None:
    # A CDR's customer is normalised when it is chosen and again when it is accepted.
    first = normalise("050-123-4567 ", "IL")
    assert normalise("050-123-4567 ", "IL") is first
    assert normalise("050-123-4567 ", "GB") is not first  # the region is part of the key


def test_a_non_string_input_is_still_normalised() -> None:
    assert normalise(972501234567, "IL") == normalise("972501234567", "IL")


# The fast readings below stand in for phonenumbers.parse on the inputs most senders send;
# phonenumbers' answer is the definition, and these hold them to it.
_COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _parsed(text: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


@given(st.sampled_from(_COUNTRY_CODES), st.text("0123456789", max_size=16))
@settings(max_examples=3000, deadline=None)
def test_a_plain_international_number_is_read_as_phonenumbers_reads_it(
    code: int, rest: str
) -> None:
    digits = f"{code}{rest}"
    fast = phones._parse_plus(digits)
    if fast is not None:
        assert fast == _parsed("+" + digits)
    assert phones._international_reading(digits) == _parsed("+" + digits)


@given(st.text("0123456789", max_size=20))
@settings(max_examples=1000, deadline=None)
def test_any_digits_are_read_as_phonenumbers_reads_them(digits: str) -> None:
    fast = phones._parse_plus(digits)
    if fast is not None:
        assert fast == _parsed("+" + digits)
    assert phones._international_reading(digits) == _parsed("+" + digits)


def test_every_country_code_takes_the_fast_reading() -> None:
    # Each country's own shape, and a leading zero (Italy keeps it; elsewhere it is the
    # trunk prefix parse strips when what is left is still a possible number).
    for code in _COUNTRY_CODES:
        region = phonenumbers.region_code_for_country_code(code)
        example = phonenumbers.example_number_for_non_geo_entity(code) or (
            phonenumbers.example_number(region) if region != "001" else None
        )
        if example is None:
            continue
        nsn = phonenumbers.national_significant_number(example)
        for body in (f"{code}{nsn}", f"{code}0{nsn}"):
            fast = phones._parse_plus(body)
            assert fast is not None, body
            assert fast == _parsed("+" + body), body


def test_a_plain_number_skips_the_cleaning_and_is_read_the_same() -> None:
    for raw in ("+972501234567", "0501234567", "972501234567", "+3906698812345"):
        assert phones._clean(raw) == raw
        assert phones._normalise(raw, "IL", Convention.NATIONAL) == phones._normalise(
            f" {raw} ", "IL", Convention.NATIONAL
        )


def test_a_phonenumbers_whose_helpers_changed_turns_the_fast_reading_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inputs = ["+972501234567", "0501234567", "447911123456", "+390212345678", "+999123456"]
    fast = [phones._normalise(raw, "IL", Convention.NATIONAL) for raw in inputs]
    assert phones._FAST  # this release's helpers read as parse does
    changed = types.SimpleNamespace(**vars(phones.pnu))
    changed._extract_country_code = lambda number: (0, number, None)  # a third value now
    monkeypatch.setattr(phones, "pnu", changed)
    assert phones._fast_reading_agrees() is False
    monkeypatch.setattr(phones, "_FAST", False)
    # Every number then goes through phonenumbers.parse, with the same answers.
    assert [phones._normalise(raw, "IL", Convention.NATIONAL) for raw in inputs] == fast


@pytest.mark.parametrize(
    ("raw", "region", "convention", "answer"),
    [
        (-12125551234, "IL", Convention.NATIONAL, Normalised("+12125551234")),
        (-12125551234, "IL", Convention.INTERNATIONAL, Normalised("+12125551234")),
        (-447911123456, "US", Convention.NATIONAL, Normalised("+447911123456")),
        (-447911123456, "US", Convention.INTERNATIONAL, Normalised("+447911123456")),
        (-972501234567, "GB", Convention.NATIONAL, Rejected("invalid_for_region", "too_long")),
        (
            -972501234567,
            "GB",
            Convention.INTERNATIONAL,
            Normalised("+972501234567", ("unknown_range",)),
        ),
    ],
)
def test_a_negative_integer_is_read_as_phonenumbers_reads_its_text(
    raw: int, region: str, convention: Convention, answer: Normalised | Rejected
) -> None:
    # str(-12125551234) is not digits: the fast readings leave it to phonenumbers, which
    # reads "+-12125551234" as +12125551234 (not +97212125551234 in IL: someone else), as
    # normalise did before them (f8794e5~1).
    assert phones._international_reading(str(raw)) == _parsed(f"+{raw}")
    assert normalise(raw, region, convention) == answer
