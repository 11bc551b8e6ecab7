"""Phone normalisation: conventions, rejections with reasons, provider formats."""

from __future__ import annotations

import pytest

from worker.phones import (
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
