"""The README is the manual: every flag of the three scripts and every exit code is in it."""

from __future__ import annotations

import os
import re

import pytest

from hub import cli, vocabulary
from tests.conftest import REPO_ROOT

with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as _readme:
    README = _readme.read()


@pytest.mark.parametrize("parser", [cli.wrapper_parser, cli.adding_log_parser, cli.run_controller_parser])
def test_every_flag_of_every_script_is_documented(parser):
    flags = [flag for action in parser()._actions for flag in action.option_strings]
    missing = [flag for flag in flags if f"`{flag}" not in README]
    assert missing == []


def test_every_exit_code_is_in_the_table():
    codes = [vocabulary.EXIT_OK, vocabulary.EXIT_WARNINGS, vocabulary.EXIT_USAGE, vocabulary.EXIT_UNREACHABLE,
             vocabulary.EXIT_NOT_FOUND, vocabulary.EXIT_DISABLED, vocabulary.EXIT_REFUSED, vocabulary.EXIT_JOURNALED]
    table = re.findall(r"^\| (\d+|128\+N) \|", README, flags=re.M)
    assert [str(c) for c in codes] + ["128+N"] == table


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)
    assert blocks[0] == ("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
                         " && .venv/bin/python demo.py")
    assert blocks[1] == ("python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt"
                         " && .venv/bin/python -m pytest -q")
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as ci:
        lines = ci.read().splitlines()
    assert blocks[1].replace(" -r ", " -q -r ") in lines


def test_the_readme_shows_each_deploy_file_exactly():
    """Every file under deploy/ appears in the README in full, right after a line naming it, and
    the README shows no deploy/ file that does not exist."""
    shown = {path: text for path, text in
             re.findall(r"^`(deploy/[^`]+)`[^\n]*\n\n```[\w-]*\n(.*?)^```$", README, flags=re.M | re.S)}
    files = {}
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, "deploy")):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as source:
                files[os.path.relpath(path, REPO_ROOT)] = source.read()
    assert sorted(shown) == sorted(files)
    for path, text in files.items():
        assert shown[path] == text, path
