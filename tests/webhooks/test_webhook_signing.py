"""Signatures a receiver can check: valid ones verify; a tampered body, another secret, an
expired or future timestamp, or a malformed header do not."""

from __future__ import annotations

import pytest

from journeygate.webhooks import verify_signature
from journeygate.webhooks.signing import sign

BODY = b'{"id":"d1","type":"trigger.cart_abandonment","attempt":1,"data":{"cart_value":38.25}}'


def test_signature_verifies_and_names_its_time():
    header = sign("s3cret", BODY, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature("s3cret", header, BODY, now=1_700_000_100)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("s3cret", BODY.replace(b"38.25", b"0.01"), 1_700_000_000),  # tampered body
        ("other", BODY, 1_700_000_000),  # wrong secret
        ("s3cret", BODY, 1_700_000_301),  # older than the tolerance (replay)
        ("s3cret", BODY, 1_699_999_699),  # from the future
    ],
)
def test_bad_signatures_do_not_verify(secret, body, now):
    header = sign("s3cret", BODY, timestamp=1_700_000_000)
    assert not verify_signature(secret, header, body, now=now)


def test_tolerance_is_the_receivers_choice():
    header = sign("s3cret", BODY, timestamp=1_700_000_000)
    assert not verify_signature("s3cret", header, BODY, now=1_700_000_060, tolerance_s=30)
    assert verify_signature("s3cret", header, BODY, now=1_700_000_060, tolerance_s=90)


@pytest.mark.parametrize(
    "header",
    ["", "t=1700000000", "v1=abc", "t=soon,v1=abc", "garbage", "t=1700000000,v1="],
)
def test_malformed_headers_do_not_verify(header):
    assert not verify_signature("s3cret", header, BODY, now=1_700_000_000)


def test_any_of_several_v1_values_verifies_for_secret_rotation():
    old = sign("old", BODY, timestamp=1_700_000_000)
    new = sign("new", BODY, timestamp=1_700_000_000)
    both = f"{new},{old.split(',')[1]}"
    assert verify_signature("old", both, BODY, now=1_700_000_000)
    assert verify_signature("new", both, BODY, now=1_700_000_000)
