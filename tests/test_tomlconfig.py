"""Strict TOML loading: every mistake names the key, the value and the reason."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest

from mgs_core.errors import ConfigError
from mgs_core.tomlconfig import (
    Check,
    Length,
    MultipleOf,
    Range,
    describe,
    existing_file,
    fail,
    from_dict,
    load_config,
    section_of,
    validate,
)


@dataclass
class Inner:
    level: int = 1

    def check(self) -> None:
        if self.level > 5:
            raise fail("inner.level", self.level, "must be at most 5")


@dataclass
class Sample:
    name: str = field(metadata={"doc": "what it is called"})
    rate: float = 1.0
    on: bool = False
    mode: Literal["a", "b"] = "a"
    path: Path | None = None
    pair: tuple[int, int] = (0, 0)
    boxes: list[tuple[int, int]] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_a_good_file_loads_with_types_converted(tmp_path: Path) -> None:
    cfg = load_config(
        Sample,
        write(
            tmp_path,
            'name = "x"\nrate = 2\npath = "/tmp/a"\npair = [1, 2]\nboxes = [[1, 2], [3, 4]]\n[inner]\nlevel = 3\n',
        ),
    )
    assert cfg.rate == 2.0 and isinstance(cfg.rate, float)
    assert cfg.path == Path("/tmp/a") and cfg.pair == (1, 2) and cfg.boxes == [(1, 2), (3, 4)]
    assert cfg.inner.level == 3


@pytest.mark.parametrize(
    "text, words",
    [
        ('name = "x"\nrat = 1\n', "unknown key 'rat'"),
        ('name = "x"\n[inner]\nlevle = 1\n', "unknown key 'inner.levle'"),
        ("rate = 1\n", "required key 'name' is missing"),
        ("name = 3\n", "'name' = 3 must be a string"),
        ('name = "x"\nrate = "fast"\n', "'rate' = 'fast' must be a number"),
        ('name = "x"\non = 1\n', "must be true or false"),
        ('name = "x"\nmode = "c"\n', "must be one of 'a', 'b'"),
        ('name = "x"\npair = [1]\n', "must have 2 items"),
        ('name = "x"\nboxes = [[1, "a"]]\n', "boxes[0][1]"),
        ('name = "x"\ninner = 3\n', "must be a table"),
        ('name = "x"\n[inner]\nlevel = 9\n', "'inner.level' = 9: must be at most 5"),
        ('name = "x"\nrate = true\n', "must be a number"),
        ('name = "x"\npath = 3\n', "'path' = 3 must be a path string"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_mistakes_name_key_value_and_reason(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_config(Sample, write(tmp_path, text))


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Sample, tmp_path / "nope.toml")


def test_from_dict_applies_the_same_rules() -> None:
    assert from_dict(Sample, {"name": "y"}).inner.level == 1
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Sample, {"name": "y", "zzz": 1})


def test_describe_lists_nested_keys_with_defaults_and_docs() -> None:
    rows = {key: (tp, default, doc) for key, tp, default, doc in describe(Sample)}
    assert rows["name"] == ("str", "(required)", "what it is called")
    assert rows["inner.level"][1] == "1"
    assert "rate" in rows and "boxes" in rows


def _even(value: int) -> None:
    if value % 2:
        raise ValueError("must be even")


def _even_first(pair: tuple[int, int]) -> None:
    _even(pair[0])


@dataclass
class Limits:
    SECTION: ClassVar[str] = "outer.limits"

    port: Annotated[int, Range(1, 65535)] = 80
    share: Annotated[float, Range(0, 1, above=True)] = 0.5
    wait_s: Annotated[float, Range(0, unit="seconds", note="0 = never")] = 0.0
    crop: Annotated[int, Range(48), MultipleOf(8)] = 96
    name: Annotated[str, Length(1, 8, "characters")] = "a"
    pairs: Annotated[list[Annotated[tuple[int, int], Check(_even_first)]], Length(max=2)] = field(default_factory=list)
    cert: Annotated[Path | None, Check(existing_file)] = None
    low: int = 1
    high: int = 2

    def check(self) -> None:
        if self.high <= self.low:
            raise fail("high", self.high, f"must be above low ({self.low})")


@dataclass
class Outer:
    limits: Limits = field(default_factory=Limits)
    count: Annotated[int, Check(_even)] = 2


@pytest.mark.parametrize(
    "data, message",
    [
        ({"port": 0}, "key 'outer.limits.port' = 0: must be from 1 to 65535"),
        ({"share": 0}, "key 'outer.limits.share' = 0.0: must be above 0 and at most 1"),
        ({"share": float("nan")}, "key 'outer.limits.share' = nan: must be above 0 and at most 1"),
        ({"wait_s": -1}, "key 'outer.limits.wait_s' = -1.0: must be at least 0 seconds (0 = never)"),
        ({"crop": 40}, "key 'outer.limits.crop' = 40: must be at least 48"),
        ({"crop": 100}, "key 'outer.limits.crop' = 100: must be a multiple of 8"),
        ({"name": ""}, "key 'outer.limits.name' = '': must have 1 to 8 characters"),
        ({"pairs": [[2, 0], [1, 0]]}, "key 'outer.limits.pairs[1]' = [1, 0]: must be even"),
        ({"pairs": [[2, 0]] * 3}, "key 'outer.limits.pairs' = [[2, 0], [2, 0], [2, 0]]: must have at most 2 items"),
        ({"cert": "/nonexistent/cert.pem"}, "key 'outer.limits.cert' = '/nonexistent/cert.pem': file does not exist"),
        ({"cert": ""}, "key 'outer.limits.cert' = '.': file does not exist"),
        ({"low": 5, "high": 5}, "key 'outer.limits.high' = 5: must be above low (5)"),
    ],
)
def test_rules_on_the_type_hint_name_the_key_from_the_section(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(Limits, data, source="x.toml")
    assert str(err.value) == f"x.toml: {message}"


def test_a_nested_section_is_named_by_its_place_in_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^config: key 'limits.port' = 0: must be from 1 to 65535$"):
        from_dict(Outer, {"limits": {"port": 0}})
    with pytest.raises(ConfigError, match=r"^config: key 'count' = 3: must be even$"):
        from_dict(Outer, {"count": 3})
    assert from_dict(Outer, {"limits": {"port": 8080, "pairs": [[4, 1]]}}).limits.pairs == [(4, 1)]


def test_validate_applies_the_same_rules_to_a_section_built_in_code(tmp_path: Path) -> None:
    validate(Limits(port=443))
    with pytest.raises(ConfigError, match=r"key 'outer.limits.crop' = 40: must be at least 48"):
        validate(Limits(crop=40))
    with pytest.raises(ConfigError, match=r"key 'limits.high' = 0: must be above low"):
        validate(Outer(limits=Limits(high=0)))
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    validate(Limits(cert=cert))


def test_describe_shows_the_rules() -> None:
    rows = {key: tp for key, tp, _, _ in describe(Limits)}
    assert rows["port"] == "int, from 1 to 65535"
    assert rows["crop"] == "int, at least 48, a multiple of 8"
    assert rows["wait_s"] == "float, at least 0 seconds (0 = never)"


def _sections(cls: type) -> list[tuple[str, type]]:
    found = []
    for key, _, _, _ in describe(cls):
        parts = key.split(".")
        for n in range(1, len(parts)):
            found.append(".".join(parts[:n]))
    out = []
    for section in sorted(set(found)):
        owner = cls
        for part in section.split("."):
            owner = typing.get_type_hints(owner)[part]
            # `X | bool` (an older flat form kept loading): the table is the dataclass member
            owner = next((t for t in typing.get_args(owner) if dataclasses.is_dataclass(t)), owner)
        out.append((section, owner))
    return out


@pytest.mark.parametrize("root", ["device.config.DeviceConfig", "server.config.ServerConfig"])
def test_every_section_declares_where_it_sits(root: str) -> None:
    """`SECTION` names a section when it is checked on its own; it must agree with the file's layout."""
    module, _, name = root.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    sections = _sections(cls)
    assert len(sections) >= 5
    assert [(key, section_of(owner)) for key, owner in sections] == [(key, key) for key, _ in sections]
