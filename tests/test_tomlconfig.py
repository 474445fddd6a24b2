"""Strict TOML loading: every mistake names the key, the value and the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mgs_core.errors import ConfigError
from mgs_core.tomlconfig import describe, fail, from_dict, load_config


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
    cfg = load_config(Sample, write(tmp_path, 'name = "x"\nrate = 2\npath = "/tmp/a"\npair = [1, 2]\n'
                                             'boxes = [[1, 2], [3, 4]]\n[inner]\nlevel = 3\n'))
    assert cfg.rate == 2.0 and isinstance(cfg.rate, float)
    assert cfg.path == Path("/tmp/a") and cfg.pair == (1, 2) and cfg.boxes == [(1, 2), (3, 4)]
    assert cfg.inner.level == 3


@pytest.mark.parametrize("text, words", [
    ('name = "x"\nrat = 1\n', "unknown key 'rat'"),
    ('name = "x"\n[inner]\nlevle = 1\n', "unknown key 'inner.levle'"),
    ('rate = 1\n', "required key 'name' is missing"),
    ('name = 3\n', "'name' = 3 must be a string"),
    ('name = "x"\nrate = "fast"\n', "'rate' = 'fast' must be a number"),
    ('name = "x"\non = 1\n', "must be true or false"),
    ('name = "x"\nmode = "c"\n', "must be one of 'a', 'b'"),
    ('name = "x"\npair = [1]\n', "must have 2 items"),
    ('name = "x"\nboxes = [[1, "a"]]\n', "boxes[0][1]"),
    ('name = "x"\ninner = 3\n', "must be a table"),
    ('name = "x"\n[inner]\nlevel = 9\n', "'inner.level' = 9: must be at most 5"),
    ('name = "x"\nrate = true\n', "must be a number"),
    ('name = \n', "not valid TOML"),
])
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
