"""Typed, strict TOML config loading into dataclasses (used by device, server and export).

A typo in a lab appliance's config must stop it at start-up with the key, the value and the reason,
never be silently ignored and never end in a traceback. Dataclasses describe the sections, and each
field is declared once: its name is the key, its type hint the type, and rules on its value ride on
the hint, `port: Annotated[int, Range(1, 65535)]`. This module walks the TOML table against those
hints, rejects unknown keys, coerces ints to floats where a float is expected, applies the rules
and then calls the dataclass's `check()` (if present) for rules that tie several fields together.
A message names the key from the field's place in the file, never from a string typed by hand.
`from_dict` serves any parsed document, so mgs_core.manifest checks the model manifest's JSON
entries the same way. Standard library only (docs/architecture.md says why not pydantic).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from mgs_core.errors import ConfigError, MgsError

T = TypeVar("T")


class InvalidValue(ConfigError):
    """A value that breaks a rule; carries the key so an enclosing section can put its name in front."""

    def __init__(self, key: str, value: Any, reason: str, source: str = "") -> None:
        self.key, self.value, self.reason = key, value, reason
        text = f"key {key!r} = {value!r}: {reason}"
        super().__init__(f"{source}: {text}" if source else text)

    def within(self, prefix: str, source: str) -> InvalidValue:
        """The same problem with the key named from the top of the file (a key that already is, stays)."""
        key = self.key if not prefix or self.key.startswith(f"{prefix}.") else _key(prefix, self.key)
        return InvalidValue(key, self.value, self.reason, source)


class Rule(ABC):
    """A rule on one value, attached to a field with `Annotated[type, rule]`."""

    @abstractmethod
    def problem(self, value: Any) -> str | None:
        """Why `value` breaks the rule, as "must ..." text, or None when it does not."""

    @abstractmethod
    def describe(self) -> str:
        """The rule for the configuration reference."""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Range(Rule):
    """Bounds of a number, inclusive unless `above` (then `min` itself is refused)."""

    min: float | None = None
    max: float | None = None
    above: bool = False
    unit: str = ""
    note: str = ""

    def describe(self) -> str:
        lo = None if self.min is None else _number(self.min)
        hi = None if self.max is None else _number(self.max)
        if lo is not None and hi is not None:
            text = f"above {lo} and at most {hi}" if self.above else f"from {lo} to {hi}"
        elif lo is not None:
            text = f"above {lo}" if self.above else f"at least {lo}"
        else:
            text = f"at most {hi}"
        return text + (f" {self.unit}" if self.unit else "") + (f" ({self.note})" if self.note else "")

    def problem(self, value: Any) -> str | None:
        too_low = self.min is not None and (value <= self.min if self.above else value < self.min)
        too_high = self.max is not None and value > self.max
        not_a_number = value != value  # TOML allows nan, which no comparison would catch
        return f"must be {self.describe()}" if too_low or too_high or not_a_number else None


@dataclass(frozen=True)
class Length(Rule):
    """How many items a list, or characters a string, may have."""

    min: int = 0
    max: int | None = None
    unit: str = "items"

    def describe(self) -> str:
        if self.max is None:
            return "not empty" if self.min == 1 else f"at least {self.min} {self.unit}"
        return f"at most {self.max} {self.unit}" if self.min == 0 else f"{self.min} to {self.max} {self.unit}"

    def problem(self, value: Any) -> str | None:
        if self.min <= len(value) and (self.max is None or len(value) <= self.max):
            return None
        if self.max is None and self.min == 1:
            return "must not be empty"
        return f"must have {self.describe()}"


@dataclass(frozen=True)
class MultipleOf(Rule):
    step: int

    def describe(self) -> str:
        return f"a multiple of {self.step}"

    def problem(self, value: Any) -> str | None:
        return None if value % self.step == 0 else f"must be {self.describe()}"


@dataclass(frozen=True)
class Check(Rule):
    """A rule written as a function that raises ValueError or MgsError with the reason."""

    func: Callable[[Any], object]
    text: str = ""

    def describe(self) -> str:
        return self.text

    def problem(self, value: Any) -> str | None:
        try:
            self.func(value)
        except (ValueError, MgsError) as exc:
            return str(exc)
        return None


def existing_file(value: str | Path) -> None:
    """For `Check(existing_file)`: an empty string means "none" and passes (an empty Path is ".", a folder)."""
    if value != "" and not Path(value).is_file():
        raise ValueError("file does not exist")


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read the TOML file at `path` into `cls`, or raise `ConfigError` naming the problem."""
    return from_dict(cls, read_toml(path), source=str(path))


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tables of the TOML file at `path`, or `ConfigError` saying why it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; create it (see the README's configuration reference)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return data


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str | None = None) -> T:
    """Build dataclass `cls` from a plain dict with the same strict rules as `load_config`.

    Keys are named from `prefix`, by default the section the class declares (`SECTION = "mqtt.tls"`).
    """
    if prefix is None:
        prefix = section_of(cls)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix or 'top level'}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"{source}: unknown key {_key(prefix, unknown[0])!r} in {where}; valid keys are: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key = _key(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: required key {key!r} is missing")
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{prefix or 'top level'}] {exc}") from None
    _check_section(obj, hints, prefix, source, deep=False)
    return obj


def validate(obj: object, prefix: str | None = None, source: str = "config") -> None:
    """Apply the rules of a dataclass built in code (from CLI options, say) as `from_dict` would."""
    if prefix is None:
        prefix = section_of(type(obj))
    _check_section(obj, typing.get_type_hints(type(obj), include_extras=True), prefix, source, deep=True)


def section_of(cls: type) -> str:
    """Where a section sits in its file (`SECTION = "pipeline.eyes"`); "" for the top level."""
    return str(getattr(cls, "SECTION", ""))


def fail(key: str, value: Any, reason: str) -> InvalidValue:
    """The one message shape for a bad value, for `check()`: `raise fail("max_s", v, "must be ...")`.

    Name the field; the loader puts the section in front.
    """
    return InvalidValue(key, value, reason)


def _check_section(obj: Any, hints: dict[str, Any], prefix: str, source: str, deep: bool) -> None:
    """The fields' rules, then the section's `check()`; nested sections only when `deep` (from_dict built them)."""
    try:
        for f in dataclasses.fields(obj):
            _check_value(hints[f.name], getattr(obj, f.name), _key(prefix, f.name), source, deep)
        check = getattr(obj, "check", None)
        if callable(check):
            check()
    except InvalidValue as exc:
        raise exc.within(prefix, source) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_value(tp: Any, value: Any, key: str, source: str, deep: bool) -> None:
    if value is None:
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        _check_value(args[0], value, key, source, deep)
        for rule in args[1:]:
            reason = rule.problem(value) if isinstance(rule, Rule) else None
            if reason:
                raise InvalidValue(key, _shown(value), reason, source)
    elif origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            _check_value(options[0], value, key, source, deep)
    elif origin is tuple and args and args[-1] is not Ellipsis:
        for i, (a, v) in enumerate(zip(args, value)):
            _check_value(a, v, f"{key}[{i}]", source, deep)
    elif origin in (list, tuple) and args:
        for i, v in enumerate(value):
            _check_value(args[0], v, f"{key}[{i}]", source, deep)
    elif origin is dict and len(args) == 2:
        for k, v in value.items():
            _check_value(args[1], v, f"{key}.{k}", source, deep)
    elif deep and dataclasses.is_dataclass(value):
        validate(value, key, source)


def _shown(value: Any) -> Any:
    """A value as the user wrote it in TOML: lists, not tuples; text, not Path objects."""
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return _convert(args[0], value, key, source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tables = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(tables) == 1:  # a table is that section: its own error is the useful one
            return _convert(tables[0], value, key, source)
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{source}: key {key!r} = {value!r} has the wrong type")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{source}: key {key!r} = {value!r} must have {len(args)} items")
            return tuple(_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} must be a table")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be a string (in quotes)")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key {key!r} = {value!r} must be a path string")
        return Path(value)
    raise ConfigError(f"{source}: key {key!r} has an unsupported type {tp!r}")


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for a configuration reference generated from the dataclasses.

    The doc of a field is taken from `field(metadata={"doc": "..."})`.
    """
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        key = _key(prefix, f.name)
        tp = hints[f.name]
        section = _section_type(tp)
        if section is not None:
            many = typing.get_origin(tp) in (list, tuple)
            rows.extend(describe(section, f"{key}[]" if many else key))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows


def _section_type(tp: Any) -> type | None:
    """The dataclass behind a field that is a section (`X`, `X | None`, `list[X]`), else None."""
    for candidate in (tp, *typing.get_args(tp)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def reference_markdown(cls: type, title: str, example: str) -> str:
    """A Markdown table of every key of `cls`, so the documented config cannot drift from the code."""
    lines = [f"## {title}", "", f"Example: `{example}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, doc in describe(cls):
        cells = [f"`{key}`", tp, f"`{default}`", doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        rules = [r.describe() for r in args[1:] if isinstance(r, Rule) and r.describe()]
        return ", ".join([_type_name(args[0]), *rules])
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
