"""The length-prefixed encoding of Redis fields and keys (keys.encode/decode): whatever a
client puts in a user id or channel name, parts come back as they went in, and no two
different lists of parts are ever written the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.cluster.redis.keys import decode, encode

# Any text but lone surrogates (which no JSON decoder of ours lets through, and which
# have no UTF-8 form), with the characters a separator could be made of made likely.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\x1f\x00:%\\s1"),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=140,
)
PARTS = st.lists(TEXT, max_size=6)


@given(PARTS)
def test_parts_come_back_as_they_went_in(parts: list[str]) -> None:
    assert decode(encode(*parts)) == parts
    assert decode(encode(*parts).encode()) == parts  # as Redis hands it back


@given(PARTS, PARTS)
def test_different_parts_never_encode_the_same(one: list[str], other: list[str]) -> None:
    if one != other:
        assert encode(*one) != encode(*other)


@given(PARTS, PARTS)
def test_an_encoding_is_never_a_prefix_that_decodes_as_another(
    one: list[str], other: list[str]
) -> None:
    # Concatenations stay unambiguous: the parts of two encodings, in order.
    assert decode(encode(*one) + encode(*other)) == one + other


def test_lengths_count_utf8_bytes() -> None:
    assert encode("a", "😀", "") == "1:a4:😀0:"
    assert encode() == ""
    assert decode("") == []


@pytest.mark.parametrize(
    "bad", ["1", "x:a", "2:a", ":a", "01:a", "-1:", "1:a5", " 1:a", "+1:a", "1_0:aaaaaaaaaa"]
)
def test_what_encode_cannot_have_written_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decode(bad)
