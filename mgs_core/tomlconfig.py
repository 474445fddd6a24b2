"""Typed, strict TOML config loading into dataclasses (used by device, server and export).

A typo in a lab appliance's config must stop it at start-up with the key, the value and the reason,
never be silently ignored and never end in a traceback. Dataclasses describe the sections; this
module walks the TOML table against their type hints, rejects unknown keys, coerces ints to floats
where a float is expected, and calls each dataclass's `check()` (if present) for range rules.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from mgs_core.errors import ConfigError

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read the TOML file at `path` into `cls`, or raise `ConfigError` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; create it (see the README's configuration reference)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(cls, data, source=str(path))


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build dataclass `cls` from a plain dict with the same strict rules as `load_config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix or 'top level'}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
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
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


def fail(key: str, value: Any, reason: str) -> ConfigError:
    """The one message shape for a bad value: use as `raise fail("camera.fps", v, "must be > 0")`."""
    return ConfigError(f"key {key!r} = {value!r}: {reason}")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} must be a table")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key)  # type: ignore[arg-type]
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
    hints = typing.get_type_hints(cls)
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
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
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
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
