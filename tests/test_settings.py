"""The settings enums: one list of values per setting, each value documented, matching the math."""

from __future__ import annotations

import pytest

from ntk_advisor import settings
from ntk_advisor.errors import ProfileError

CHOICES = [c for c in vars(settings).values() if isinstance(c, type) and issubclass(c, settings.Choice)
           and c is not settings.Choice]


def test_the_math_implements_exactly_the_offered_values():
    from ntk_advisor.ntk.select import OBJECTIVES
    from ntk_advisor.ntk.targets import REDUCTIONS

    assert settings.Objective.values() == OBJECTIVES
    assert settings.Reduction.values() == REDUCTIONS


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.__name__)
def test_every_value_says_when_to_pick_it(choice):
    assert len(choice.values()) >= 2
    for value in choice.values():
        assert f"``{value}``" in choice.__doc__, f"{choice.__name__} does not document {value}"


def test_a_bad_value_is_one_line_naming_the_choices():
    with pytest.raises(ProfileError, match=r"unknown --output 'sum': use one of trace, margin, full"):
        settings.Reduction.check("sum", "--output", ProfileError)
    assert settings.Reduction.check("full", "--output", ProfileError) == "full"
