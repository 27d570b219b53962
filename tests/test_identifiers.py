"""Identifier normalisation: each rule as Meta and Google document it, hashes recomputed by hand."""

from __future__ import annotations

import hashlib

import pytest

from connectors import identifiers as ids


def h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_sha256_is_lower_case_hex_of_utf8():
    assert ids.sha256_hex("adsapi") == "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"
    assert ids.sha256_hex("émilie") == h("émilie")
    assert ids.is_sha256_hex(ids.sha256_hex("x"))


@pytest.mark.parametrize("raw, expected", [
    ("  John.Doe@Example.COM ", "john.doe@example.com"),
    ("a+tag@gmail.com", "a+tag@gmail.com"),
    ("First.Last@GMAIL.com", "first.last@gmail.com"),  # Customer Match keeps gmail dots
])
def test_email_trimmed_and_lower_cased_for_both(raw, expected):
    assert ids.meta_email(raw) == expected
    assert ids.google_email(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "not-an-address", "a@b", "two@@x.com", "sp ace@x.com"])
def test_email_that_is_not_an_address_is_dropped(raw):
    assert ids.normalize_email(raw) is None


@pytest.mark.parametrize("raw, country, e164", [
    ("+1 (650) 253-1234", None, "+16502531234"),
    ("(650) 253-1234", "US", "+16502531234"),
    ("020 7183 8750", "GB", "+442071838750"),      # the UK trunk 0 goes
    ("0044 20 7183 8750", None, "+442071838750"),   # 00 is the international prefix
    ("06 1234 5678", "it", "+390612345678"),        # Italy's leading 0 stays
    ("447123456789", None, "+447123456789"),        # digits that start with the country code
])
def test_phone_e164_for_google_digits_for_meta(raw, country, e164):
    assert ids.google_phone(raw, country) == e164
    assert ids.meta_phone(raw, country) == e164[1:]   # no '+', no leading zeros
    assert not ids.meta_phone(raw, country).startswith("0")


@pytest.mark.parametrize("raw", [None, "", "abc", "12", "+1 555"])
def test_phone_that_cannot_be_a_number_is_dropped(raw):
    assert ids.e164(raw) is None


def test_names():
    assert ids.meta_name("  O'Brien-Smith ") == "obriensmith"
    assert ids.meta_name("Mary Ann") == "maryann"
    assert ids.meta_name("Émilie") == "émilie"          # accents kept as UTF-8
    assert ids.meta_name("...") is None
    assert ids.google_name("  Émilie ") == "émilie"
    assert ids.google_name("") is None


def test_places():
    assert ids.meta_zip("94025-1234", "US") == "94025"
    assert ids.meta_zip("94025") == "94025"
    assert ids.meta_zip(" SW1A 1AA ", "GB") == "sw1a1aa"
    assert ids.meta_country(" GB ") == "gb"
    assert ids.country_code("us") == "US"
    assert ids.country_code("United States") is None
    assert ids.postal_code(" SW1A  1AA ") == "SW1A 1AA"
    assert ids.meta_madid("AECE52E7-03EE-455A-B3C4-E57283966239") == "aece52e7-03ee-455a-b3c4-e57283966239"
