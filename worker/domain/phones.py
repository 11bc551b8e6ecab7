"""Phone number normalisation to E.164 and rendering in each provider's format."""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult
from phonenumbers import phonenumberutil as pnu

_SEPARATORS = re.compile(r"[\s\-.()/]")
_SPREADSHEET_INT = re.compile(r"^\+?\d+\.0+$")
#: One dot and one or two digits after it: a decimal (972501234567.25), not a separator.
_DECIMAL = re.compile(r"^\+?\d+\.\d{1,2}$")
_DIGITS = re.compile(r"^\d+$")
#: What most senders send: nothing to clean (the rules below leave it as it is).
_PLAIN = re.compile(r"\+?[0-9]{1,17}")
#: What the fast readings below take; anything else (a negative integer's text) goes to
#: phonenumbers.
_ASCII_DIGITS = re.compile(r"[0-9]+")
_LETTER = re.compile(r"[^\W\d_]")
#: Dashes that are not ASCII (hyphen, non-breaking hyphen, en and em dash, minus sign, ...).
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe58\ufe63\uff0d")
#: Inputs no longer than this are cached; a longer one is no phone number anyway, and a
#: few long ones must not fill memory (the cache holds its keys).
CACHED_LENGTH = 40

#: Why a number was refused; every rejection carries exactly one of these.
REJECTION_REASONS = (
    "empty",
    "not_a_number",
    "contains_letters",
    "decimal_number",
    "sip_address",
    "too_short",
    "too_long",
    "invalid_length",
    "invalid_country_code",
    "invalid_for_region",
    "trunk_prefix_with_country_code",
    "own_number",
)


class Convention(enum.StrEnum):
    """How a source writes its numbers."""

    #: E.164 with `+`, or a national number of the region (`/v1/optouts`, Voicenter CDRs).
    NATIONAL = "national"
    #: Country code always present, `+` optional (`12125551234`, the DNC trigger).
    INTERNATIONAL = "international"


class NumberFormat(enum.StrEnum):
    """How a provider wants a number written."""

    DIGITS = "digits"  # 972501234567
    PLUS = "plus"  # +972501234567
    INTEGER = "integer"  # 972501234567 as a JSON number


@dataclass(frozen=True, slots=True)
class Normalised:
    """An accepted number; `flags` says what was odd about it (e.g. `unknown_range`)."""

    e164: str
    flags: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused input, with one of REJECTION_REASONS."""

    reason: str
    detail: str = ""


_POSSIBLE_REASONS = {
    ValidationResult.TOO_SHORT: "too_short",
    ValidationResult.TOO_LONG: "too_long",
    ValidationResult.INVALID_LENGTH: "invalid_length",
    ValidationResult.INVALID_COUNTRY_CODE: "invalid_country_code",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too_short",
}

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "invalid_country_code",
    NumberParseException.NOT_A_NUMBER: "not_a_number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too_short",
    NumberParseException.TOO_SHORT_NSN: "too_short",
    NumberParseException.TOO_LONG: "too_long",
}


def _clean(raw: object) -> str | Rejected:
    if isinstance(raw, bool) or raw is None:
        return Rejected("not_a_number", "not a string or integer")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if raw.is_integer() and raw > 0:
            return str(int(raw))
        return Rejected("decimal_number", "a decimal is not a phone number")
    if not isinstance(raw, str):
        return Rejected("not_a_number", "not a string or integer")
    if _PLAIN.fullmatch(raw):
        return raw
    text = _plain(raw).strip()
    if not text:
        return Rejected("empty")
    lowered = text.lower()
    if lowered.startswith(("sip:", "sips:")) or "@" in text:
        return Rejected("sip_address", "SIP addresses are not phone numbers")
    if _LETTER.search(text):
        # phonenumbers would read letters as keypad digits: 0501234567abc is not a number.
        return Rejected("contains_letters")
    spaced = text.replace(" ", "")
    if _SPREADSHEET_INT.match(spaced):
        # A spreadsheet export writes 972501234567 as 972501234567.0.
        compact = spaced.split(".", 1)[0]
    elif _DECIMAL.match(spaced):
        return Rejected("decimal_number", "only a spreadsheet's N.0 is read as an integer")
    else:
        compact = _SEPARATORS.sub("", text)
    body = compact[1:] if compact.startswith("+") else compact
    if not body or not _DIGITS.match(body):
        return Rejected("not_a_number")
    if len(body) > 17:
        return Rejected("too_long")
    return compact


def _plain(text: str) -> str:
    """What a person sees: no invisible formatting characters (zero-width spaces, the byte
    order mark, the bidi marks and isolates that copying from Hebrew or Arabic screens
    brings along), every space a space, every dash a hyphen, every digit an ASCII one."""
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
        elif unicodedata.category(ch) == "Cf":
            continue
        elif ch in _DASHES:
            out.append("-")
        elif ch.isspace():
            out.append(" ")
        elif ch.isdecimal():
            out.append(str(unicodedata.decimal(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | Rejected:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return Rejected(_PARSE_REASONS.get(exc.error_type, "not_a_number"), str(exc))


#: parse keeps the national prefix when what is left after it would be any of these.
_PREFIX_KEPT = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)


def _parse_plus(body: str) -> phonenumbers.PhoneNumber | None:
    """`+{body}` as phonenumbers.parse(..., None) reads it, for ASCII digits only; None
    when the input is not the plain case this covers (too short, no known country code)
    and phonenumbers must read it. parse spends most of its time on what a plain `+` and
    digits never has (an IDD prefix, letters, an extension, Unicode digits, a
    phone-context): this is parse's own path for the rest, through its own helpers, and
    tests/worker/domain/test_phones.py holds it equal to parse."""
    if not 4 <= len(body) <= 17 or not _ASCII_DIGITS.fullmatch(body):
        return None
    code, rest = pnu._extract_country_code(body)
    if code == 0 or len(rest) < 2:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    if metadata is None:
        return None
    national = rest
    _, stripped, _ = pnu._maybe_strip_national_prefix_carrier_code(rest, metadata)
    result = pnu._test_number_length(stripped, metadata)
    if result not in _PREFIX_KEPT:
        national = stripped
    if not 2 <= len(national) <= 17:
        return None
    number = phonenumbers.PhoneNumber(country_code=code)
    pnu._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


#: Inputs the fast reading must read as phonenumbers.parse does before it is used: a
#: phonenumbers release whose private helpers changed turns it off, never into wrong numbers
#: or a refusal of every number. (Israel, Italy's leading zero, NANP, the UK, Argentina's
#: mobile 9, a national prefix after the country code, a non-geographic code.)
_SELF_CHECK = (
    "972501234567",
    "390212345678",
    "12125551234",
    "447911123456",
    "5491123456789",
    "9720501234567",
    "80012345678",
)


def _fast_reading_agrees() -> bool:
    try:
        return all(_parse_plus(d) == phonenumbers.parse("+" + d, None) for d in _SELF_CHECK)
    except Exception:  # noqa: BLE001
        return False


_FAST = _fast_reading_agrees()


def _parse_international(cleaned: str) -> phonenumbers.PhoneNumber | Rejected:
    """`cleaned` (`+` and ASCII digits) read as the international number it says it is."""
    parsed = _parse_plus(cleaned[1:]) if _FAST else None
    return _parse(cleaned, None) if parsed is None else parsed


def _international_reading(digits: str) -> phonenumbers.PhoneNumber | None:
    """ASCII `digits` read with a `+` before them; None when that reading fails, for
    callers that only ask whether it does (a failed international reading leaves the
    national one, whose reason is the answer). Without a known country code at their
    start, phonenumbers refuses `+` and the digits whatever follows: no parse needed. Not
    digits (str(-12125551234): parse reads `+-12125551234` as +12125551234): parse."""
    if _FAST and _ASCII_DIGITS.fullmatch(digits) and pnu._extract_country_code(digits)[0] == 0:
        return None
    parsed = _parse_international("+" + digits)
    return None if isinstance(parsed, Rejected) else parsed


def _possible(number: phonenumbers.PhoneNumber) -> Rejected | None:
    result = phonenumbers.is_possible_number_with_reason(number)
    if result == ValidationResult.IS_POSSIBLE:
        return None
    return Rejected(_POSSIBLE_REASONS.get(result, "invalid_length"))


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _accept(number: phonenumbers.PhoneNumber, valid: bool | None = None) -> Normalised:
    flags: tuple[str, ...] = ()
    if not (phonenumbers.is_valid_number(number) if valid is None else valid):
        # Refusing a real customer's opt-out is worse than storing one number too many.
        flags = ("unknown_range",)
    return Normalised(_e164(number), flags)


class _Readings:
    """The ways one input without a `+` can be read, each parsed and checked at most once
    (the rules below ask for the same reading several times)."""

    def __init__(self, cleaned: str, region: str) -> None:
        self.cleaned = cleaned
        self.region = region

    @functools.cached_property
    def national(self) -> phonenumbers.PhoneNumber | Rejected:
        return _parse(self.cleaned, self.region)

    @functools.cached_property
    def national_valid(self) -> bool:
        national = self.national
        return not isinstance(national, Rejected) and phonenumbers.is_valid_number(national)

    @functools.cached_property
    def international(self) -> phonenumbers.PhoneNumber | None:
        return _international_reading(self.cleaned)

    @functools.cached_property
    def possible_international(self) -> phonenumbers.PhoneNumber | None:
        """The international reading if it is a possible number."""
        number = self.international
        return number if number is not None and _possible(number) is None else None

    @functools.cached_property
    def valid_international(self) -> phonenumbers.PhoneNumber | None:
        """The international reading if it is a valid number."""
        number = self.international
        return number if number is not None and phonenumbers.is_valid_number(number) else None


def normalise(
    raw: object,
    region: str,
    convention: Convention = Convention.NATIONAL,
    own_numbers: frozenset[str] = frozenset(),
) -> Normalised | Rejected:
    """Normalise one number to E.164 or say why it cannot be one; never raises."""
    try:
        if isinstance(raw, str):
            result = _normalise_text(raw, region, convention)
        else:
            result = _normalise(raw, region, convention)
    except Exception as exc:  # noqa: BLE001
        # phonenumbers must never turn bad input into a 500.
        return Rejected("not_a_number", f"unparseable: {type(exc).__name__}")
    if isinstance(result, Normalised) and result.e164 in own_numbers:
        return Rejected("own_number", "the company's own numbers are never blocked")
    return result


def _normalise_text(raw: str, region: str, convention: Convention) -> Normalised | Rejected:
    if len(raw) > CACHED_LENGTH:
        return _normalise(raw, region, convention)
    return _cached(raw, region, convention)


@functools.lru_cache(maxsize=8192)
def _cached(raw: str, region: str, convention: Convention) -> Normalised | Rejected:
    # A CDR's customer is normalised to be chosen, then again when it is accepted; and the
    # same numbers come back (re-imports, repeat callers). Results are immutable.
    return _normalise(raw, region, convention)


def _normalise(raw: object, region: str, convention: Convention) -> Normalised | Rejected:
    cleaned = _clean(raw)
    if isinstance(cleaned, Rejected):
        return cleaned
    if cleaned.startswith("+"):
        parsed = _parse_international(cleaned)
        if isinstance(parsed, Rejected):
            return parsed
        return _possible(parsed) or _accept(parsed)

    read = _Readings(cleaned, region)
    if convention is Convention.INTERNATIONAL:
        international = read.possible_international
        if international is not None:
            return _accept(international)

    trunk = _trunk_prefix_first(read)
    if trunk is not None:
        return trunk
    national = read.national
    if isinstance(national, Rejected):
        international = read.possible_international
        return national if international is None else _accept(international)
    problem = _possible(national)
    national_valid = problem is None and read.national_valid
    valid_international = None if national_valid else read.valid_international
    if valid_international is not None:
        # 447911123456 in region IL: the national reading is not a real number, the
        # international one is, so the sender meant the country code.
        return _accept(valid_international, valid=True)
    if problem is not None:
        if phonenumbers.region_code_for_number(national) != region.upper():
            return Rejected("invalid_for_region", problem.reason)
        return problem
    return _accept(national, valid=national_valid)


def _trunk_prefix_first(read: _Readings) -> Normalised | Rejected | None:
    """A national trunk prefix written before a full international number: `0` then
    `972501234567` in region IL. Read as a national number it would be +972972501234567, a
    number nobody has. Read as the international number when that is possible (or, for
    another country's code, valid); refused with a reason when it is neither. None when the
    input is no such thing (a valid national number always stays national: 097234567)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(read.region.upper())
    if metadata is None or not metadata.national_prefix:
        return None
    prefix = metadata.national_prefix
    cleaned = read.cleaned
    if not cleaned.startswith(prefix) or cleaned.startswith(prefix * 2):
        return None
    if read.national_valid:
        return None
    rest = cleaned[len(prefix) :]
    international = _international_reading(rest)
    code = str(metadata.country_code)
    if rest.startswith(code) and len(rest) >= len(code) + 7:
        if international is not None and _possible(international) is None:
            result = _accept(international)
            return Normalised(result.e164, (*result.flags, "trunk_prefix_removed"))
        return Rejected(
            "trunk_prefix_with_country_code",
            f"a trunk prefix ({prefix}) before the country code: write +{rest} or the "
            "national number",
        )
    # Another country's full number after the prefix (0 then 447911123456): longer than any
    # national number, and a real number read internationally.
    if (
        len(rest) >= 10
        and international is not None
        and phonenumbers.is_valid_number(international)
    ):
        return Normalised(_e164(international), ("trunk_prefix_removed",))
    return None


def normalise_own_numbers(raw: list[str], region: str) -> frozenset[str]:
    """The company's DIDs and caller ids as E.164, for the own-number check."""
    out = set()
    for item in raw:
        result = normalise(item, region)
        if isinstance(result, Normalised):
            out.add(result.e164)
    return frozenset(out)


_NOT_ASCII_DIGIT = re.compile(r"[^0-9]")


def digits(value: str) -> str:
    """Only the digits of a number, for matching provider answers to what was sent."""
    return _NOT_ASCII_DIGIT.sub("", value)


def render(e164: str, fmt: NumberFormat) -> str | int:
    """Write an E.164 number the way a provider wants it."""
    if fmt is NumberFormat.PLUS:
        return e164
    if fmt is NumberFormat.INTEGER:
        return int(digits(e164))
    return digits(e164)


def mask(e164: str) -> str:
    """A number as logs may show it: `+97250***4567`."""
    if len(e164) <= 8:
        return e164[:2] + "***"
    return e164[:6] + "***" + e164[-4:]
