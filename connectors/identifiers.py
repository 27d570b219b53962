"""Normalising and hashing the identifiers ad platforms match audiences on.

Both platforms match on SHA-256 of a *normalised* value: one character of difference (a capital,
a space, a '+') gives another hash and no match. Each rule below is the platform's own, and the
two disagree on phones, so each has its functions. Unhashed email addresses and phone numbers never
leave the process: the audience connectors put only these hashes into requests.

Meta (Marketing API, Customer File Custom Audiences, "Hashing and Normalizing Data"; the multi-key
schema of `/{audience_id}/users`):

    EMAIL    trim, lower-case
    PHONE    digits only, with the country code, no '+', no leading zeros   ("447123456", not
             "+447123456")
    FN, LN   lower-case, no punctuation (letters kept, accents as UTF-8)
    ZIP      lower-case, no spaces; a US ZIP is its first 5 digits
    COUNTRY  the ISO 3166-1 alpha-2 code, lower-case
    MADID    lower-case, hyphens kept; Meta documents it as not hashed (see meta_audiences)

Google Ads (Customer Match, `UserIdentifier` reference: "For hashed_email and address fields,
trim leading and trailing whitespace and convert all characters to lowercase. Phone numbers must be
formatted in E.164 format (for example, +16502531234) before hashing"):

    hashedEmail        trim, lower-case. Customer Match does NOT ask to remove the dots of a
                       gmail.com address (that rule belongs to enhanced conversions), so they stay.
    hashedPhoneNumber  E.164 with the '+'
    hashedFirstName,   trim, lower-case
    hashedLastName
    countryCode, postalCode   sent as they are (Google documents them as not hashed)

Phone numbers in profiles come in any shape ("(650) 253-1234", "0044 20 7183 8750", "020 7183
8750" with `country = "GB"`); `phonenumbers` (Google's libphonenumber) turns them into E.164, with
each country's trunk prefix handled (the UK's leading 0 goes, Italy's stays).

Every function returns None for a value that cannot be normalised (empty, not an address, a phone
number without a country), so a bad trait drops that identifier instead of sending a hash that can
never match.

A removal queued when a user is forgotten (engine.daemon.erasure) carries no trait in clear: only
what its connector will send, hashed by these rules from the profile before it was deleted, under
the platform's key (`prehashed`). The connectors send those hashes as they are, and only values
that are SHA-256 hex where a hash is due (`is_sha256_hex`), so nothing carried is ever sent in clear
for a hash.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Mapping

import phonenumbers

from .base import ERASED

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(value: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 bytes: the form both platforms take."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ------------------------------------------------------------------ email

def normalize_email(value: Any) -> str | None:
    """Trimmed and lower-cased, the rule of both platforms; None if it is not an address."""
    text = _text(value)
    if text is None:
        return None
    text = text.lower()
    if text.count("@") != 1 or any(c.isspace() for c in text):
        return None
    local, domain = text.split("@")
    if not local or "." not in domain:
        return None
    return text


def meta_email(value: Any) -> str | None:
    return normalize_email(value)


def google_email(value: Any) -> str | None:
    return normalize_email(value)


# ------------------------------------------------------------------ phone

def e164(value: Any, country: Any = None) -> str | None:
    """A phone number in E.164 ("+16502531234"). A number written without its country code
    ("020 7183 8750") needs `country` (ISO 3166-1 alpha-2) to say whose it is; "00" before the
    country code counts as "+"."""
    text = _text(value)
    if text is None:
        return None
    region = str(country).strip().upper() if country else None
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+") and region is None:
        # digits that already start with a country code ("447123456789") are accepted as such
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def meta_phone(value: Any, country: Any = None) -> str | None:
    """Meta's PHONE: the E.164 digits without the '+' (country code first, no leading zeros)."""
    number = e164(value, country)
    return number[1:] if number else None


def google_phone(value: Any, country: Any = None) -> str | None:
    """Google's hashedPhoneNumber input: E.164 with the '+'."""
    return e164(value, country)


# ------------------------------------------------------------------ names and places

def meta_name(value: Any) -> str | None:
    """Meta's FN / LN: lower-case letters only (accents kept, in NFC), no punctuation or spaces."""
    text = _text(value)
    if text is None:
        return None
    text = unicodedata.normalize("NFC", text.lower())
    letters = "".join(c for c in text if unicodedata.category(c).startswith("L"))
    return letters or None


def google_name(value: Any) -> str | None:
    """Google's hashedFirstName / hashedLastName: trimmed and lower-cased."""
    text = _text(value)
    return unicodedata.normalize("NFC", text.lower()) if text else None


def country_code(value: Any) -> str | None:
    """ISO 3166-1 alpha-2, upper-case as Google takes it (Meta's is this, lower-cased)."""
    text = _text(value)
    if text is None:
        return None
    letters = re.sub(r"[^A-Za-z]", "", text).upper()
    return letters if len(letters) == 2 else None


def meta_country(value: Any) -> str | None:
    code = country_code(value)
    return code.lower() if code else None


def meta_zip(value: Any, country: Any = None) -> str | None:
    """Meta's ZIP: lower-case, no spaces; for the US the first five digits ("94025-1234" -> "94025")."""
    text = _text(value)
    if text is None:
        return None
    text = re.sub(r"\s+", "", text.lower())
    if (country_code(country) or "US") == "US" and re.match(r"^\d{5}(-?\d{4})?$", text):
        text = text[:5]
    return text or None


def postal_code(value: Any) -> str | None:
    text = _text(value)
    return re.sub(r"\s+", " ", text) if text else None


def meta_madid(value: Any) -> str | None:
    """A mobile advertiser id (IDFA / AAID): lower-case, hyphens kept."""
    text = _text(value)
    return text.lower() if text else None


# ------------------------------------------------------------------ helpers for tests and receivers

def is_sha256_hex(value: str) -> bool:
    return bool(_SHA256_HEX.match(value))


def prehashed(data: Mapping[str, Any], platform: str) -> Any:
    """What a removal queued when a user was forgotten carries for `platform` ("meta", "google"):
    the hashes its connector sends, taken from the profile before it was deleted. None for any
    other delivery, and for a removal an older daemon queued with the traits in clear (read from
    them as from a profile, until a daemon opening the store hashes it)."""
    carried = data.get(ERASED)
    return carried.get(platform) if isinstance(carried, Mapping) else None
