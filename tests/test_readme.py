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
             vocabulary.EXIT_NOT_FOUND, vocabulary.EXIT_DISABLED, vocabulary.EXIT_JOURNALED]
    table = re.findall(r"^\| (\d+|128\+N) \|", README, flags=re.M)
    assert [str(c) for c in codes] + ["128+N"] == table


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)
    assert blocks[0] == "python3 -m pip install -r requirements.txt && python3 demo.py"
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as ci:
        assert blocks[1].replace(" -r ", " -q -r ") in ci.read()
