"""Problems with the file itself: one line naming the file, no YAML excerpt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.conftest import config_errors


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert config_errors(path) == [f"{path}: file not found; check the path"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert config_errors(str(tmp_path)) == [
        f"{tmp_path}: is a directory; give the path of a YAML file"
    ]


def test_unreadable_file(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config("caches: []\n")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # Tests may run as root, which can read anything: make open() refuse instead.
    monkeypatch.setattr("proxy.config.loader.open", denied, raising=False)
    [line] = config_errors(path)
    assert line.startswith(f"{path}: cannot be read (permission denied);")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"caches: []\n# caf\xe9\n")
    assert config_errors(str(path)) == [f"{path}: is not UTF-8 text; save the file as UTF-8"]


def test_invalid_yaml_gives_line_and_column_without_excerpt(write_config) -> None:
    path = write_config("caches:\n  - name: a\n    password: hunter2-SECRET\n   bad: [\n")
    [line] = config_errors(path)
    assert line.startswith(f"{path}: invalid YAML at line ")
    assert ", column " in line
    assert "fix the syntax there" in line
    assert "hunter2-SECRET" not in line


def test_invalid_yaml_reports_the_right_line(write_config) -> None:
    path = write_config("caches:\n  - name: a\n    type: local\n  foo: bar\n")
    [line] = config_errors(path)
    assert "at line 4, column 3" in line


def test_duplicate_yaml_keys_are_an_error(write_config) -> None:
    path = write_config("caches: []\nlisteners: []\ncaches: []\n")
    [line] = config_errors(path)
    assert line.startswith(f'{path}: invalid YAML at line 3, column 1: duplicate key "caches";')


@pytest.mark.parametrize(("text", "kind"), [
    ("- a\n- b\n", "a list"),
    ("just text\n", "a string"),
    ("42\n", "a number"),
])
def test_top_level_must_be_a_mapping(write_config, text: str, kind: str) -> None:
    path = write_config(text)
    assert config_errors(path) == [
        (f"{path}: the top level must be a mapping (listeners: and caches:), found {kind}; "
        "start the file with 'caches:'")
    ]
