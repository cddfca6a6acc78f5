"""Real Python tools for the tool-calling notebook: a weather lookup and a calculator.

The weather comes from the project's own fixed table (data/weather.yaml), so examples give the
same answer on every run and offline. The calculator evaluates arithmetic only (no names, no
calls, no attribute access), so a model cannot make it run code.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from typing import Any

import yaml

from cookbook.paths import DATA_DIR

WEATHER_PATH = DATA_DIR / "weather.yaml"
MAX_EXPRESSION_CHARS = 200
MAX_POWER = 64

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name, e.g. Paris"}},
            "required": ["location"],
        },
    },
}
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression such as 12 * (3 + 4).",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression"}},
            "required": ["expression"],
        },
    },
}


@functools.cache
def weather_table() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(WEATHER_PATH.read_text(encoding="utf-8"))
    return dict(data["cities"])


def get_weather(location: str) -> dict[str, Any]:
    """Current weather for a city of the table (case and surrounding spaces ignored)."""
    table = weather_table()
    wanted = " ".join(str(location).split()).casefold()
    for city, row in table.items():
        if city.casefold() == wanted:
            return {"location": city, **row}
    return {"error": f"no weather for {location!r}", "known_cities": sorted(table)}


_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}  # fmt: skip
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_POWER:
            raise ValueError(f"exponent {right} is too large (at most {MAX_POWER})")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(f"only numbers and + - * / // % ** ( ) are allowed, not {type(node).__name__}")


def calculate(expression: str) -> dict[str, Any]:
    """Evaluate arithmetic; bad input comes back as an error the model can read."""
    text = str(expression).replace("×", "*").replace("÷", "/").replace("^", "**")
    if len(text) > MAX_EXPRESSION_CHARS:
        return {"expression": expression, "error": f"longer than {MAX_EXPRESSION_CHARS} characters"}
    try:
        value = _eval(ast.parse(text, mode="eval"))
    except ZeroDivisionError:
        return {"expression": expression, "error": "division by zero"}
    except (SyntaxError, ValueError) as exc:
        return {"expression": expression, "error": str(exc).splitlines()[0]}
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return {"expression": expression, "result": value}


TOOLS = [WEATHER_TOOL, CALCULATOR_TOOL]
REGISTRY = {"get_weather": get_weather, "calculate": calculate}
