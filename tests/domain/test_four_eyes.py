"""Four eyes (rule 2): who counts as the same person when an author tries to approve."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from noticeflow.domain.signals import Approve, same_person


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("alice", "alice"),
        ("alice", "Alice"),
        ("alice", "ALICE "),
        ("alice", "\uff41\uff4c\uff49\uff43\uff45"),  # fullwidth letters are their plain selves
        ("Straße", "STRASSE"),  # case-folded, not just lower-cased
    ],
)
def test_the_same_person_in_another_spelling(one, other):
    assert same_person(one, other) and same_person(other, one)


@pytest.mark.parametrize(("one", "other"), [("alice", "bob"), ("alice", "alice2"), ("al", "alice")])
def test_different_people(one, other):
    assert not same_person(one, other)


def test_an_invisible_character_cannot_make_a_second_person():
    with pytest.raises(ValidationError, match="invisible character"):
        Approve(by="ali\u200bce")
