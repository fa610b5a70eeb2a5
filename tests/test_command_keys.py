"""A command's keys are declared once, in its YAML (conf/<command>.yaml): the check's table follows from it.

Each key's type is its default's; aelab/config_check.py adds only what a default cannot say (ranges, choices, a
null default's real type), by key name. So a key added to a YAML alone is checked, and a constraint left behind
for a key that is gone (or misspelt) fails here.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from aelab import config_check
from aelab.commands import COMMANDS
from aelab.config_check import (CONSTRAINTS, SHARED, check_keys, command_keys, declaration_problems, keys_table,
                                yaml_defaults)
from aelab.errors import UserError
from aelab.schema import OneOf, Range
from conftest import REPO

CONFIGS = sorted(c.config for c in COMMANDS.values())


def defaults_of(config: str) -> dict[str, Any]:
    return yaml_defaults((REPO / "conf" / f"{config}.yaml").read_text(encoding="utf-8"))


def wrong_value(default: Any) -> Any:
    """A value of another type than the default's (a string for everything but strings and null)."""
    if isinstance(default, str) or default is None:
        return [["x"]]  # a list of lists: no key takes one
    return "abc"


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        values = values[p]
    values[leaf] = value


def as_config(defaults: dict[str, Any]) -> dict[str, Any]:
    """The YAML's defaults as a composed config (nested sections, no dotted keys)."""
    out: dict[str, Any] = {}
    for key, value in defaults.items():
        if "." not in key:
            out[key] = copy.deepcopy(value)
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_every_yaml_key_is_checked_and_every_constraint_names_one(config: str) -> None:
    defaults = defaults_of(config)
    constraints = CONSTRAINTS.get(config, {})
    assert not declaration_problems(defaults, constraints)
    table = command_keys(config)
    assert set(defaults) <= set(table)  # every key of the YAML, sections too
    assert set(table) - set(defaults) <= set(constraints)  # the rest: keys of a null section a constraint types
    values = as_config(defaults)
    check_keys(values, table)  # the defaults pass
    for key, default in defaults.items():
        bad = copy.deepcopy(values)
        set_dotted(bad, key, wrong_value(default))
        with pytest.raises(UserError) as caught:
            check_keys(bad, table)
        assert caught.value.key == key and "\n" not in caught.value.line(), (config, key, caught.value.line())
    with pytest.raises(UserError, match="unknown key"):
        check_keys({**values, "not_a_key": 1}, table)  # a key the YAML lacks is still refused


def test_every_shared_constraint_is_used_and_every_command_has_a_yaml() -> None:
    assert set(CONSTRAINTS) <= set(CONFIGS)  # constraints of a command that no longer exists
    used = {key for config in CONFIGS for key in defaults_of(config)}
    assert set(SHARED) <= used, set(SHARED) - used


def test_a_constraint_for_a_missing_key_is_caught(monkeypatch) -> None:
    defaults = defaults_of("traverse")
    assert declaration_problems(defaults, {"dims_typo": Range(1, None)}) == [
        "dims_typo: constrained, but no such key in the YAML"]
    assert declaration_problems(defaults, {"span.low": float})  # a key inside a section the YAML does not declare
    assert declaration_problems(defaults, {"dims": Range(1, None)})  # a range on a null default: type unknown
    assert declaration_problems(defaults, {"steps": Range(20, None)})  # the default itself would be refused
    # and a command whose constraints drifted does not run at all (a mistake of aelab's, loud in every test)
    monkeypatch.setitem(CONSTRAINTS, "traverse", {**CONSTRAINTS["traverse"], "removed_key": Range(0, None)})
    command_keys.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="removed_key: constrained, but no such key"):
            command_keys("traverse")
    finally:
        monkeypatch.undo()
        command_keys.cache_clear()


PLANTED = """
planted_int: 7  # a new key, nothing added to config_check.py
planted_float: 0.5
planted_flag: false
planted_word: hello
planted_path: null
planted_list: [1, 2]
planted_section:
  inner: 3
"""


@pytest.fixture
def planted_conf(tmp_path: Path, monkeypatch) -> Path:
    """A copy of conf/ whose sample.yaml has new keys of every kind, read by the checks in place of the real one."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    text = (conf / "sample.yaml").read_text(encoding="utf-8").replace("\nhydra:\n", PLANTED + "\nhydra:\n", 1)
    (conf / "sample.yaml").write_text(text, encoding="utf-8")

    monkeypatch.setattr(config_check, "command_yaml", lambda config: (conf / f"{config}.yaml").read_text("utf-8"))
    command_keys.cache_clear()
    yield conf
    monkeypatch.undo()
    command_keys.cache_clear()


def test_a_key_added_to_a_yaml_alone_is_checked_with_its_defaults_type(planted_conf: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(planted_conf), version_base="1.3"):
            def composed(*overrides: str) -> Any:
                return compose(config_name="sample", overrides=[f"run={run}", *overrides])

            cfg = composed("planted_int=9", "planted_float=2", "planted_path=somewhere", "planted_list=[3,4,5]",
                           "planted_section.inner=4")
            assert cfg.planted_int == 9 and cfg.planted_word == "hello"
            config_check.check_sample(cfg)  # accepted: each a value of its default's type
            refused = {"planted_int": "1.5", "planted_float": "abc", "planted_flag": "3", "planted_word": "[1]",
                       "planted_path": "[1]", "planted_list": "[a,b]", "planted_section.inner": "abc"}
            for key, value in refused.items():
                with pytest.raises(UserError) as caught:
                    config_check.check_sample(composed(f"{key}={value}"))
                assert caught.value.key == key and "expected" in str(caught.value), str(caught.value)
            assert "expected an integer" in str(_refusal(composed("planted_int=1.5")))
            extra = OmegaConf.to_container(cfg, resolve=True)
            extra["planted_section"]["other"] = 1
            with pytest.raises(UserError, match="planted_section.other: unknown key"):
                config_check.check_sample(extra)  # a section's keys are its YAML's too
    finally:
        GlobalHydra.instance().clear()
    table = command_keys("sample")
    assert table["planted_int"] is int and table["planted_float"] is float and table["planted_flag"] is bool
    assert table["planted_word"] is str and table["planted_path"] == (str | None) and table["planted_list"] == list[int]


def _refusal(cfg: Any) -> UserError:
    with pytest.raises(UserError) as caught:
        config_check.check_sample(cfg)
    return caught.value


def test_constraints_narrow_or_replace_the_defaults_type() -> None:
    table = keys_table({"n": 3, "mode": "a", "x": None, "seed": 0}, {"n": Range(1, 5), "mode": OneOf(("a", "b")),
                                                                    "x": int | None})
    check_keys({"n": 5, "mode": "b", "x": 2, "seed": 1}, table)
    for key, value, words in [("n", 6, "<= 5"), ("mode", "c", "one of: a, b"), ("x", "s", "an integer or null"),
                              ("seed", -1, ">= 0")]:  # seed: SHARED's range, for any command whose YAML has a seed
        with pytest.raises(UserError, match=words):
            check_keys({key: value}, table)


def footer_items(config: str) -> list[tuple[str, str]]:
    """(name, its parenthesis) of each key `aelab <command> --help` lists after "Keys:" in the YAML's footer."""
    footer = OmegaConf.load(REPO / "conf" / f"{config}.yaml").hydra.help.footer
    listed = footer[footer.lower().index("keys:") + len("keys:"):]
    listed = listed[: next(i for i, ch in enumerate(listed) if ch == "." and listed[i + 1 : i + 2] in ("", " ", "\n"))]
    items = []
    for item in " ".join(listed.split()).split(", "):
        name, _, note = item.strip().partition(" (")
        items.append((name, note.removesuffix(")")))
    return items


@pytest.mark.parametrize("config", CONFIGS)
def test_help_lists_every_key_of_the_yaml_and_no_other(config: str) -> None:
    """`aelab <command> --help` ends with a line of its keys: it names each top-level key of the YAML (a section as
    section.*), nothing else besides its config groups, and the choices it shows are the check's."""
    defaults, table = defaults_of(config), command_keys(config)
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / f"{config}.yaml"), resolve=False)
    entries = [next(iter(d)) for d in raw["defaults"] if isinstance(d, dict)]
    groups = {group for group in entries if not group.startswith("override")}
    items = footer_items(config)
    names = {name.removesuffix(".*") for name, _ in items}
    assert names <= set(defaults) | groups, names - set(defaults) - groups  # a listed key that is gone
    top = {key for key in defaults if "." not in key}
    assert top <= {name.split(".")[0] for name in names}, top - {name.split(".")[0] for name in names}
    for name, note in items:
        choices = note.split("|")
        meta = getattr(table.get(name), "__metadata__", ())
        one_of = [m for m in meta if isinstance(m, OneOf)]
        if len(choices) > 1 and one_of:
            assert set(choices) == {str(v) for v in one_of[0].values}, (name, note)
