"""A study spec's errors: :class:`SpecError` and the one formatter that writes them.

Every check of a spec runs inside pydantic: the constraints of the field types
(``pipeline.space``), the validators of the spec's models, and the rules a validator
states itself with :func:`refuse`. Whatever fails, pydantic gathers it into one
``ValidationError``, and :func:`spec_error` turns that into the one line a person reads::

    studies/x.yaml: space.scale.low: must be <= high (got low=2.0, high=1.0)

This module knows pydantic and nothing of the spec's format.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]
"""Where a value sits in the spec: keys and list indices, outermost first."""

SPEC = "spec"
"""The error type of the rules the spec's validators state themselves."""

_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}
"""pydantic's error type for a value of the wrong type -> the type wanted, in words."""
_BOUND_WORDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
"""pydantic's error type for a number out of bounds -> its context key and operator."""
_NUMBER_TEXT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class SpecError(ValueError):
    """A study spec is invalid. ``str()`` is one line: ``source: field.path: problem``."""


def problem(message: str) -> PydanticCustomError:
    """A rule's failure, raised from a validator at the value it validates."""
    return PydanticCustomError(SPEC, "{message}", {"message": message})


def refuse(loc: Loc, message: str, value: Any = None) -> NoReturn:
    """Fail validation at ``loc`` below the value being validated.

    A validator that checks a whole mapping or list uses this to name the key or index
    at fault; pydantic prefixes ``loc`` with where the validator runs.

    Raises:
        ValidationError: one error of type :data:`SPEC`.
    """
    error = InitErrorDetails(type=problem(message), loc=loc, input=value)
    raise ValidationError.from_exception_data("spec", [error])


def spec_error(exc: ValidationError, source: str) -> SpecError:
    """The one-line :class:`SpecError` for the first problem pydantic found."""
    err = exc.errors(include_url=False)[0]
    return SpecError(f"{source}: {join(err['loc'])}: {_words(err)}".replace("\n", " "))


def join(loc: Loc) -> str:
    """A path in the dotted form of the messages: ``space.seed[1]``; ``<top>`` for ()."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _words(err: ErrorDetails) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == SPEC:
        return err["msg"]
    if kind == "missing":
        return "required"
    if kind in _TYPE_WORDS:
        words = _TYPE_WORDS[kind]
        msg = f"must be {words} (got {short(value)})"
        numeric_text = isinstance(value, str) and _NUMBER_TEXT_RE.fullmatch(value)
        if numeric_text and kind in ("int_type", "float_type"):
            msg += "; YAML reads a number like 1e-3 as text, write 1.0e-3 or 0.001"
        return msg
    if kind == "finite_number":
        return f"must be finite (got {value!r})"
    if kind in _BOUND_WORDS:
        key, op = _BOUND_WORDS[kind]
        if isinstance(ctx[key], float) and isinstance(value, int):
            value = float(value)  # a float field reads an int as a float
        return f"must be {op} {_number(ctx[key])} (got {value!r})"
    text = err["msg"]
    return f"{text[:1].lower()}{text[1:]} (got {short(value)})"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
