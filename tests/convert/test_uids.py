from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.convert.uids import UidFactory, is_valid_uid

ROOTS = st.one_of(
    st.none(),
    st.lists(st.integers(min_value=0, max_value=99999), min_size=2, max_size=8)
    .map(lambda parts: ".".join(str(p) for p in parts))
    .filter(lambda root: len(root) <= 40),
)


@given(root=ROOTS, parts=st.lists(st.text(max_size=50), max_size=4))
def test_derived_uids_are_always_valid_and_stable(root: str | None, parts: list[str]) -> None:
    factory = UidFactory(root)
    uid = factory.derive(*parts)
    assert is_valid_uid(uid)
    assert uid == UidFactory(root).derive(*parts)
    assert uid.startswith(f"{root}." if root else "2.25.")


def test_without_root_uid_is_2_25_with_128_bit_number() -> None:
    uid = UidFactory(None).derive("sop", "abc")
    number = int(uid.removeprefix("2.25."))
    assert number < 2**128
    assert len(uid) <= 44


def test_parts_are_separated_unambiguously() -> None:
    factory = UidFactory("1.2.3")
    assert factory.derive("ab", "c") != factory.derive("a", "bc")
    assert factory.derive("sop", "x") != factory.derive("study", "x")


def test_longest_root_still_leaves_room_for_a_unique_tail() -> None:
    root = "1." + "2" * 38
    uid = UidFactory(root).derive("x")
    assert len(uid) == 64
    assert len(uid) - len(root) - 1 >= 23


@pytest.mark.parametrize("root", ["1.02.3", "abc", "1..2", "1." + "2" * 39, ""])
def test_invalid_roots_are_refused(root: str) -> None:
    with pytest.raises(ValueError):
        UidFactory(root)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.7", True),
        ("0.1", True),
        ("1.2.03", False),
        ("1.2.", False),
        ("1", False),
        ("1.2.a", False),
        ("1." + "1" * 63, False),
    ],
)
def test_uid_syntax(value: str, valid: bool) -> None:
    assert is_valid_uid(value) is valid
