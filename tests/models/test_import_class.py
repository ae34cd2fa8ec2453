"""A user's model module that fails to import is one line naming its file and line."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from kedro_edge.errors import ConfigError
from kedro_edge.models import import_class


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package ``usermodels_<id>`` on sys.path, cwd at its parent (as under `kedro run`).

    Returns ``write(name, source)`` which creates ``<package>/<name>.py`` and its import path.
    """
    package = f"usermodels_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def write(name: str, source: str) -> str:
        (tmp_path / package / f"{name}.py").write_text(textwrap.dedent(source))
        return f"{package}.{name}"

    yield write
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def _message(path: str) -> str:
    with pytest.raises(ConfigError) as err:
        import_class(path, "model.class_path")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("parameter 'model.class_path': ")
    return message


def test_a_syntax_error_names_file_and_line(user_package):
    module = user_package(
        "broken",
        """\
        from torch import nn

        class Net(nn.Module:
            pass
        """,
    )
    package = module.split(".")[0]
    assert _message(f"{module}.Net") == (
        f"parameter 'model.class_path': {package}/broken.py:3: SyntaxError: invalid syntax"
    )


def test_a_missing_dependency_of_the_module_names_the_import_line(user_package):
    module = user_package(
        "needs_more",
        """\
        from torch import nn
        import nonexistent_pkg_for_kedro_edge_tests

        class Net(nn.Module):
            pass
        """,
    )
    message = _message(f"{module}.Net")
    assert message.endswith(
        "needs_more.py:2: ModuleNotFoundError: No module named 'nonexistent_pkg_for_kedro_edge_tests'"
    )
    assert "cannot import" not in message  # the module exists: its own import failed


def test_an_exception_in_a_helper_module_names_the_helper_line(user_package):
    user_package(
        "helpers",
        """\
        def width():
            return {}["width"]
        """,
    )
    module = user_package(
        "uses_helper",
        """\
        from . import helpers

        WIDTH = helpers.width()
        """,
    )
    assert _message(f"{module}.Net").endswith("helpers.py:2: KeyError: 'width'")


@pytest.mark.parametrize(
    "call",
    ['json.loads("{")', 'yaml.safe_load("a: [")'],  # raised deep inside the stdlib / an installed package
)
def test_library_frames_are_skipped_for_the_users_line(user_package, call):
    module = user_package(
        "calls_library",
        f"""\
        import json
        import yaml

        CONFIG = {call}
        """,
    )
    assert "calls_library.py:4: " in _message(f"{module}.Net")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        (
            "no_such_package.Model",
            "cannot import 'no_such_package.Model' (No module named 'no_such_package')",
        ),
        ("kedro_edge.no_such_module.Model", "cannot import 'kedro_edge.no_such_module.Model'"),
        ("kedro_edge.models.NoSuchModel", "cannot import 'kedro_edge.models.NoSuchModel'"),
        ("Model", "cannot import 'Model'"),
    ],
)
def test_a_module_or_class_that_does_not_exist_cannot_be_imported(path, needle):
    assert needle in _message(path)
