"""Sealed session ids: only our keys open them, a rotated-out key still opens what it sealed, nothing else does."""

from __future__ import annotations

import pytest

from protocols.mcp.session_seal import SessionSeal, parse_key

OLD, NEW, OTHER = (parse_key(c * 64) for c in "abc")


def test_a_sealed_id_opens_to_what_was_sealed_and_reads_as_nothing_else() -> None:
    seal = SessionSeal(NEW)
    state = {"p": "alice", "u": [["web", "abc123", "http://h/mcp", "2025-11-25"]]}
    first, second = seal.seal(state), seal.seal(state)
    assert first != second  # a random nonce each time
    assert seal.open(first) == state and seal.open(second) == state
    assert first.startswith("s1.") and all(0x21 <= ord(c) <= 0x7E for c in first) and "=" not in first
    assert "abc123" not in first and "alice" not in first


def test_rotation_opens_with_previous_keys_and_seals_with_the_current_one() -> None:
    old_id = SessionSeal(OLD).seal({"n": 1})
    rotated = SessionSeal(NEW, [OLD])
    assert rotated.open(old_id) == {"n": 1}
    new_id = rotated.seal({"n": 2})
    assert SessionSeal(OLD).open(new_id) is None  # never sealed with a previous key
    assert SessionSeal(NEW).open(new_id) == {"n": 2}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # the tag
        lambda s: s[:10] + ("A" if s[10] != "A" else "B") + s[11:],  # the nonce
        lambda s: s[3:],  # no format prefix
        lambda s: "s1." + "!!!",  # not base64
        lambda s: "s1.AAAA",  # too short
        lambda s: s + "AAAA",  # longer
        lambda s: "0123456789abcdef0123456789abcdef",  # an SDK id
    ],
)
def test_anything_but_an_intact_id_of_ours_opens_to_none(mangle: object) -> None:
    seal = SessionSeal(NEW)
    assert seal.open(mangle(seal.seal({"n": 1}))) is None  # type: ignore[operator]
    assert SessionSeal(OTHER).open(seal.seal({"n": 1})) is None


@pytest.mark.parametrize("text", ["", "ab", "a" * 63, "a" * 65, "g" * 64, "a" * 62 + "-1"])
def test_keys_are_64_hex_characters(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex characters"):
        parse_key(text)
    assert parse_key("AB" * 32) == bytes([0xAB]) * 32
