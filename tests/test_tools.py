"""The notebook's tools: the weather table lookup and the arithmetic-only calculator."""

from __future__ import annotations

import pytest

from cookbook.tools import calculate, get_weather, weather_table


def test_weather_lookup_is_forgiving_about_case_and_spaces():
    table = weather_table()
    assert len(table) >= 10
    paris = get_weather("  paris ")
    assert paris == {"location": "Paris", **table["Paris"]}
    assert get_weather("new   york")["location"] == "New York"


def test_unknown_city_lists_the_known_ones():
    result = get_weather("Atlantis")
    assert result["error"] == "no weather for 'Atlantis'" and "Paris" in result["known_cities"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("12 * 7", 84),
        ("(3 + 4) * 2", 14),
        ("7 / 2", 3.5),
        ("2 ** 10", 1024),
        ("-5 + 2", -3),
        ("6 × 7", 42),
        ("10 / 4 * 2", 5),
    ],
)
def test_calculator(expression, value):
    assert calculate(expression) == {"expression": expression, "result": value}


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os').system('id')", "not Call"),
        ("x + 1", "not Name"),
        ("1 / 0", "division by zero"),
        ("2 ** 100000", "exponent 100000 is too large"),
        ("1 +", "invalid syntax"),
        ("9" * 300, "longer than 200 characters"),
    ],
)
def test_calculator_refuses_what_is_not_arithmetic(expression, error):
    result = calculate(expression)
    assert "result" not in result and error in result["error"]
