"""The config's field types and its error messages: small validators that write what users read
("must be a whole number, got 2.5"), and pydantic's first error turned into one ConfigError naming
the file and the dotted key. Used by training.config."""
from __future__ import annotations

import difflib
import math
from functools import partial
from typing import Annotated, Any, Mapping, Optional, Sequence, Type

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from .errors import ConfigError


# --------------------------------------------------------------------------- field validators

def problem(message: str) -> PydanticCustomError:
    # No context is given, so pydantic leaves braces in user values as they are.
    return PydanticCustomError("config", message)


def check_int(value: Any, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise problem(f"must be a whole number, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise problem(f"must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise problem(f"must be a whole number, got {value!r}")
    number = int(number)
    if minimum is not None and number < minimum:
        raise problem(f"must be at least {minimum}, got {number}")
    return number


def check_float(value: Any, minimum: Optional[float] = None, maximum: Optional[float] = None,
           strictly_positive: bool = False) -> float:
    # YAML 1.1 reads 1e-6 (no dot) as a string; numeric strings are accepted so the obvious spelling works.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise problem(f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise problem(f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise problem(f"must be a finite number, got {value!r}")
    if strictly_positive and number <= 0:
        raise problem(f"must be greater than 0, got {number:g}")
    if minimum is not None and number < minimum:
        raise problem(f"must be at least {minimum:g}, got {number:g}")
    if maximum is not None and number > maximum:
        raise problem(f"must be at most {maximum:g}, got {number:g}")
    return number


def check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem(f"must be true or false, got {value!r}")
    return value


def check_str(value: Any, choices: Optional[Sequence[str]] = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem(f"must be a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise problem(f"must be one of {', '.join(choices)}, got {value!r}")
    return value.strip()


def _optional(check):
    return lambda value: None if value is None else check(value)


def Int(minimum: Optional[int] = None, optional: bool = False):  # noqa: N802 - a type factory
    check = partial(check_int, minimum=minimum)
    return Annotated[Optional[int] if optional else int, BeforeValidator(_optional(check) if optional else check)]


def Float(minimum=None, maximum=None, strictly_positive=False):  # noqa: N802
    return Annotated[float, BeforeValidator(partial(check_float, minimum=minimum, maximum=maximum,
                                                    strictly_positive=strictly_positive))]


def Str(choices: Optional[Sequence[str]] = None, optional: bool = False):  # noqa: N802
    check = partial(check_str, choices=choices)
    return Annotated[Optional[str] if optional else str, BeforeValidator(_optional(check) if optional else check)]


Bool = Annotated[bool, BeforeValidator(check_bool)]



# --------------------------------------------------------------------------- pydantic errors -> one ConfigError


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(root: Type[BaseModel], loc: Sequence[Any], list_items: Mapping[str, Type[BaseModel]]):
    """The model a location (without its last part) points into; ``list_items`` names the model of
    each list field's items."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if part in list_items:
            model = list_items[part]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def as_config_error(error: ValidationError, source: str, root: Type[BaseModel],
                    list_items: Mapping[str, Type[BaseModel]]) -> ConfigError:
    """pydantic's first error as one ConfigError: file, dotted key, message (did-you-mean for unknown keys)."""
    errors = error.errors()
    # The order users expect: unknown keys first, then missing ones, then values.
    rank = {"extra_forbidden": 0, "missing": 1}
    first = min(errors, key=lambda e: rank.get(e["type"], 2))
    loc = first["loc"]
    if first["type"] == "extra_forbidden":
        known = list(_model_at(root, loc[:-1], list_items).model_fields)
        where = _dotted(loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return ConfigError(f"{source}: unknown key '{where + '.' if where else ''}{key}'{hint}; "
                           f"known keys here: {', '.join(known)}")
    if first["type"] == "missing":
        return ConfigError(f"{source}: {_dotted(loc)}: is required")
    if first["type"] == "model_type" or first["type"] == "dict_type":
        return ConfigError(f"{source}: {_dotted(loc)}: must be a mapping of keys to values, got "
                           f"{type(first.get('input')).__name__}")
    return ConfigError(f"{source}: {_dotted(loc)}: {first['msg']}")


