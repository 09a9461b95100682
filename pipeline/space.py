"""A study spec's values: the pydantic type of each TrialSpec field, and the search space.

Each field's type is built from its rule in :data:`models.fields.FIELDS`, the rule
``models.check_spec`` applies to a trial too, so a spec and ``initstudy trial`` accept
the same values: a strict type (an int is not a float's text, ``true`` is not an
integer; an int is read as a float where a float is wanted), finiteness and bounds as
pydantic constraints, and registry names (``init``, ``task``, ...) by a validator that
lists the known ones.

The ``trial:`` section is a mapping of such values (:func:`parse_trial`); ``space:``
maps each searchable field to a :class:`Choice`, a :class:`Range` or a :class:`Fixed`
value (:func:`parse_space`), each a pydantic model of that field's values. Errors are
pydantic's; ``pipeline.specerrors`` words them.
"""

from __future__ import annotations

from functools import cache, partial
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    TypeAdapter,
    create_model,
    model_validator,
)

from models.fields import FIELDS, SEARCHABLE, Field, unknown_name
from pipeline.specerrors import problem, refuse, short

__all__ = [
    "Choice",
    "Fixed",
    "Range",
    "SpaceParam",
    "StrictModel",
    "known_names",
    "parse_space",
    "parse_trial",
    "value_type",
    "within",
]


class StrictModel(BaseModel):
    """Base: frozen, strict, unknown keys refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    unknown_key: ClassVar[str] = "unknown key"
    """What a key that is not a field is, in the error message."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in cls.model_fields:
                    allowed = ", ".join(cls.model_fields)
                    refuse((str(key),), f"{cls.unknown_key}; allowed: {allowed}", value)
        return data


# --------------------------------------------------------------------------- field types


@cache
def known_names(registry: str) -> tuple[str, ...]:
    """The names in one of ``models``' registries (``TASKS``, ``INIT_SCHEMES``, ...), sorted."""
    import models  # lazy: models pulls in torch; loading a spec only needs the names

    return tuple(sorted(getattr(models, registry)))


def _registered(field: Field, value: str) -> str:
    known = known_names(str(field.registry))
    if value not in known:
        raise problem(unknown_name(value, known))
    return value


def _within(field: Field, value: float) -> float:
    if field.out_of_bounds(value):
        raise problem(f"must be {field.bounds} (got {short(value)})")
    return value


def _under_cap(field: Field, value: int) -> int:
    if field.over_cap(value):
        raise problem(field.cap_words(value))
    return value


def within(field: Field) -> AfterValidator:
    """The check that a number is within ``field``'s bounds, both stated when it fails."""
    return AfterValidator(partial(_within, field))


def value_type(field: Field, *, optional: bool | None = None) -> Any:
    """The pydantic type of ``field``'s values, from its rule.

    A strict ``int``/``float``/``str``/``bool``; a float must be finite; a one-sided
    bound is pydantic's ``Ge``/``Gt``/``Le``, an interval (the seeds) one check that
    states both ends, a ``cap`` (a size limit) a check stated when exceeded; a registry
    name must be registered. ``optional`` (default: the field's) adds None.
    """
    meta: list[Any] = [Strict()]
    if field.kind is float:
        meta.append(AllowInfNan(False))
    if field.low is not None and field.high is not None:
        meta.append(within(field))
    elif field.low is not None:
        meta.append(Gt(field.low) if field.low_open else Ge(field.low))
    elif field.high is not None:
        meta.append(Le(field.high))
    if field.cap is not None:
        meta.append(AfterValidator(partial(_under_cap, field)))
    if field.registry is not None:
        meta.append(AfterValidator(partial(_registered, field)))
    typ: Any = Annotated[(field.kind, *meta)]
    if field.optional if optional is None else optional:
        return typ | None
    return typ


_VALUES: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(value_type(field)) for name, field in FIELDS.items()
}
_CHOICES: dict[str, TypeAdapter[list[Any]]] = {
    name: TypeAdapter(list[value_type(FIELDS[name])])  # type: ignore[misc, arg-type]
    for name in SEARCHABLE
}

_TRIAL_VALUES: dict[str, Any] = {name: (value_type(field), None) for name, field in FIELDS.items()}
_Trial = create_model("TrialValues", __base__=StrictModel, **_TRIAL_VALUES)
_Trial.unknown_key = "unknown TrialSpec field"


def parse_trial(raw: dict[Any, Any]) -> dict[str, Any]:
    """Check a ``trial:`` mapping: TrialSpec fields and values of their types.

    Returns:
        The values given, in the order given (an int for a float field as a float).

    Raises:
        ValidationError: the first key or value that is wrong.
    """
    given = _Trial.model_validate(raw)
    return {str(key): getattr(given, key) for key in raw}


# --------------------------------------------------------------------------- space


class Choice(StrictModel):
    """A categorical parameter: one of ``choices`` (for grids: every one of them)."""

    choices: list[str | int | float | None]


class Range(StrictModel):
    """A numeric range ``[low, high]``, optionally stepped or log-scaled.

    Each searchable number has its own subclass (:func:`range_model`), whose ``low``,
    ``high`` and ``step`` are of that field's type: a range's type is its parameter's.
    """

    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False
    type: Literal["int", "float"]

    name: ClassVar[str] = ""
    """The field the range is of."""

    @model_validator(mode="before")
    @classmethod
    def _check_given(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for bound in ("low", "high"):
            if bound not in data:
                refuse((bound,), "required in a range (low and high)")
            if data[bound] is None:
                refuse((bound,), "must be a number, not null")
        kind = cls.model_fields["type"].default
        if "type" in data and data["type"] != kind:
            refuse(
                ("type",),
                f"{cls.name} is {kind}-valued; type must be {kind!r} (got {short(data['type'])})",
                data["type"],
            )
        return data

    @model_validator(mode="after")
    def _check_range(self) -> Range:
        low, high, step = self.low, self.high, self.step
        if low > high:
            refuse(("low",), f"must be <= high (got low={low!r}, high={high!r})", low)
        if self.log and low <= 0:
            refuse(("low",), f"a log range needs low > 0 (got {low!r})", low)
        if step is None:
            return self
        if self.log and step != 1:
            refuse(("step",), "cannot be combined with log: true", step)
        if self.type == "int":
            divides = (high - low) % step == 0
        else:
            n = (high - low) / step
            divides = abs(n - round(n)) <= 1e-9 * max(1.0, abs(n))
        if not divides:
            got = f"low={low}, high={high}, step={step}"
            refuse(("step",), f"must divide high - low (got {got})", step)
        if self.log:  # step 1 with log on an int range is IntDistribution's default
            return self.model_copy(update={"step": None})
        return self

    def values(self) -> list[int]:
        """Every value of an int range, low to high (the grid expansion)."""
        step = int(self.step or 1)
        return list(range(int(self.low), int(self.high) + 1, step))

    def count(self) -> int:
        """Number of values of an int range, without expanding it."""
        return (int(self.high) - int(self.low)) // int(self.step or 1) + 1


class Fixed(StrictModel):
    """A parameter fixed to one value (same as putting it in ``trial``)."""

    value: str | int | float | None


SpaceParam = Choice | Range | Fixed


def range_model(field: Field) -> type[Range]:
    """The :class:`Range` of one numeric field: bounds of its type, a step of its kind."""
    kind: Literal["int", "float"] = "int" if field.kind is int else "float"
    step: Any = Annotated[int, Strict(), Gt(0)]
    if kind == "float":
        step = Annotated[float, Strict(), AllowInfNan(False), Gt(0)]
    bound = value_type(field, optional=False)
    fields: dict[str, Any] = {
        "low": (bound, ...),
        "high": (bound, ...),
        "step": (step | None, None),
        "type": (Literal["int", "float"], kind),
    }
    model = create_model(f"Range_{field.name}", __base__=Range, __doc__=Range.__doc__, **fields)
    model.name = field.name
    return model


_RANGES: dict[str, type[Range]] = {
    name: range_model(FIELDS[name]) for name in SEARCHABLE if FIELDS[name].kind in (int, float)
}


def _entry(name: str, raw: Any) -> SpaceParam:
    """One ``space:`` entry: a list is a Choice, a mapping a Range, a scalar Fixed."""
    if isinstance(raw, list):
        values = _CHOICES[name].validate_python(raw)
        if not values:
            raise problem("choice list is empty; give at least one value")
        for i, value in enumerate(values):
            if any(type(v) is type(value) and v == value for v in values[:i]):
                refuse((i,), f"duplicate choice {value!r}; choices must be distinct", value)
        return Choice(choices=values)
    if isinstance(raw, dict):
        if name not in _RANGES:
            raise problem(f"{name} takes a list of choices or a single value, not a range")
        return _RANGES[name].model_validate(raw)
    return Fixed(value=_VALUES[name].validate_python(raw))


_ENTRIES: dict[str, Any] = {
    name: (Annotated[Any, BeforeValidator(partial(_entry, name))], None) for name in SEARCHABLE
}
_Space = create_model("SpaceValues", __base__=StrictModel, **_ENTRIES)
_Space.unknown_key = "not a searchable parameter"


def parse_space(raw: dict[Any, Any]) -> dict[str, SpaceParam]:
    """Check a ``space:`` mapping: searchable fields, each a list, a range or a value.

    Returns:
        The entries given, in the order given.

    Raises:
        ValidationError: the first key or entry that is wrong.
    """
    given = _Space.model_validate(raw)
    return {str(key): getattr(given, key) for key in raw}
