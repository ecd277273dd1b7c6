"""SQS MD5s against the reference vectors M1-M4 (§12.5), plus receipt handles and message ids."""

from __future__ import annotations

import base64

import pytest

from gateway.sinks.sqs.attributes import MessageAttribute
from gateway.sinks.sqs.checksums import (
    ReceiptHandle,
    content_dedup_id,
    derive_message_id,
    md5_of_attributes,
    md5_of_body,
)
from gateway.sinks.sqs.exceptions import ReceiptHandleIsInvalid

CITY = MessageAttribute("String", string_value="Any City")


def test_m1_body() -> None:
    assert md5_of_body('{"temp":21}') == "542d413d017399b802ed388899c133fb"


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"City": CITY}, "0c32cb5c844c01fbd5b6b434b52cf670"),
        (
            {"Population": MessageAttribute("Number", string_value="1250800"), "City": CITY},
            "bf1eb494fecc925abadc71de4be9785c",
        ),
        ({"blob": MessageAttribute("Binary", binary_value=b"\x00\x01\x02")}, "a44784199c97ff8c40423784a25b2410"),
    ],
    ids=["M2", "M3", "M4"],
)
def test_m2_m4_attributes(attrs: dict[str, MessageAttribute], expected: str) -> None:
    assert md5_of_attributes(attrs) == expected


def test_custom_type_label_is_hashed_in_full() -> None:
    plain = md5_of_attributes({"a": MessageAttribute("String", string_value="v")})
    custom = md5_of_attributes({"a": MessageAttribute("String.x", string_value="v")})
    binary_custom = md5_of_attributes({"a": MessageAttribute("Binary.png", binary_value=b"v")})
    assert len({plain, custom, binary_custom}) == 3


def test_system_attribute_md5() -> None:
    trace = {"AWSTraceHeader": MessageAttribute("String", string_value="Root=1-5759e988-bd862e3fe1be46a994272793")}
    assert len(md5_of_attributes(trace)) == 32


def test_non_ascii_body_is_hashed_as_utf8() -> None:
    assert md5_of_body("é") == "66ddcd97cfdeabb2f6fb8a999b4bc76f"


def test_content_dedup_id_is_sha256_of_body() -> None:
    assert content_dedup_id("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_message_ids_are_uuid_shaped_and_deterministic() -> None:
    a, b = derive_message_id("seed", 1), derive_message_id("seed", 2)
    assert a == derive_message_id("seed", 1) != b
    assert [len(p) for p in a.split("-")] == [8, 4, 4, 4, 12]
    assert a[14] == "4"


def test_receipt_handle_round_trip_and_validation() -> None:
    handle = ReceiptHandle("tag", "mid", 3, 1000)
    assert ReceiptHandle.decode(handle.encode(), "tag") == handle
    for bad in [
        "",
        "not base64!!",
        base64.urlsafe_b64encode(b"v1|tag|mid|x|0").decode(),
        ReceiptHandle("other", "m", 1, 0).encode(),
    ]:
        with pytest.raises(ReceiptHandleIsInvalid):
            ReceiptHandle.decode(bad, "tag")
