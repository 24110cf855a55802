"""hub.cli: the three parsers (good parses, bad values, conflicting flags) and
run_command's mapping of errors to messages and exit codes."""

import json
import logging
import os

import pytest

from hub import cli, vocabulary
from hub.errors import (ApiError, DisabledError, HubError, NotFoundError, UnreachableError,
                        UsageError)

P = ["-p", "Passwords.json"]


def parse(parser, argv):
    return cli.parse(parser, argv)


def refused(capsys, parser, argv):
    """Parse and expect exit 2; return stderr."""
    with pytest.raises(SystemExit) as caught:
        cli.parse(parser, argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- IntegrationWrapper.py

def test_wrapper_defaults(monkeypatch):
    monkeypatch.delenv("HUB_LOG_DIR", raising=False)
    args = parse(cli.wrapper_parser(), P + ["-i", "Integration.json"])
    assert (args.passwords, args.integrations, args.schema) == ("Passwords.json", "Integration.json", None)
    assert args.name is None and args.control_process is None
    assert not args.allow_overlap and not args.replay
    assert args.max_upload_mb == vocabulary.DEFAULT_MAX_UPLOAD_MB
    assert args.grace == vocabulary.DEFAULT_GRACE_SECONDS
    assert args.log_dir == cli.default_log_dir()


def test_wrapper_all_flags():
    args = parse(cli.wrapper_parser(), P + [
        "--integrations", "I.json", "-s", "S.json", "--name", "A", "--name", "B C",
        "--control-process", "nightly", "--allow-overlap", "--max-upload-mb", "2.5",
        "--grace", "3", "--log-dir", "/var/log/hub"])
    assert args.name == ["A", "B C"]
    assert (args.schema, args.control_process, args.allow_overlap) == ("S.json", "nightly", True)
    assert (args.max_upload_mb, args.grace, args.log_dir) == (2.5, 3.0, "/var/log/hub")


def test_wrapper_replay_needs_no_integrations():
    args = parse(cli.wrapper_parser(), P + ["--replay"])
    assert args.replay and args.integrations is None


@pytest.mark.parametrize("argv, flags", [
    (["-i", "I.json"], ["-p/--passwords"]),
    (P, ["-i/--integrations", "--replay"]),
    (P + ["-i", "I.json", "--max-upload-mb", "abc"], ["--max-upload-mb", "abc"]),
    (P + ["-i", "I.json", "--max-upload-mb", "0"], ["--max-upload-mb"]),
    (P + ["-i", "I.json", "--grace", "-1"], ["--grace", "-1"]),
    (P + ["-i", "I.json", "--grace", "nan"], ["--grace"]),
    (P + ["-i", "I.json", "--passw", "x"], ["--passw"]),  # no abbreviations
    (P + ["-i", "I.json", "--bogus"], ["--bogus"]),
    (P + ["--replay", "--name", "A"], ["--replay", "--name"]),
    (P + ["--replay", "-i", "I.json"], ["--replay", "-i/--integrations"]),
    (P + ["--replay", "--control-process", "x"], ["--replay", "--control-process"]),
    (P + ["--replay", "--allow-overlap"], ["--replay", "--allow-overlap"]),
])
def test_wrapper_bad_flags_exit_2_naming_the_flag(capsys, argv, flags):
    err = refused(capsys, cli.wrapper_parser(), argv)
    assert "usage: IntegrationWrapper.py" in err
    for flag in flags:
        assert flag in err


def test_print_default_schema_needs_no_other_flag(capsys):
    with pytest.raises(SystemExit) as caught:
        parse(cli.wrapper_parser(), ["--print-default-schema"])
    assert caught.value.code == 0
    assert json.loads(capsys.readouterr().out)["log"]["message"] == "IL_MESSAGE"


def test_log_dir_default_comes_from_env_else_log_beside_the_scripts(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_LOG_DIR", str(tmp_path))
    assert cli.default_log_dir() == str(tmp_path)
    assert parse(cli.wrapper_parser(), P + ["--replay"]).log_dir == str(tmp_path)
    monkeypatch.setenv("HUB_LOG_DIR", "")
    root = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    assert cli.default_log_dir() == os.path.join(root, "log")


# ---------------------------------------------------------------- IntegrationWrapperAddingLog.py

@pytest.mark.parametrize("given, expected", [
    ("0", vocabulary.INFO), ("1", vocabulary.WARNING), ("2", vocabulary.ERROR),
    ("info", vocabulary.INFO), ("WARNING", vocabulary.WARNING), ("Error", vocabulary.ERROR),
])
def test_adding_log_message_types(given, expected):
    args = parse(cli.adding_log_parser(), P + ["-i", "1001", "-w", given, "-m", "hello"])
    assert args.message_type == expected
    assert (args.integration_id, args.message, args.file, args.description, args.run_id) == \
        ("1001", "hello", None, None, None)


def test_adding_log_all_flags(tmp_path):
    upload = tmp_path / "report.csv"
    upload.write_text("a,b\n")
    args = parse(cli.adding_log_parser(), P + [
        "--integration-id", "1001", "--message-type", "1", "--message", "disk low",
        "--file", str(upload), "--description", "details", "--run-id", "1001-R", "-s", "S.json"])
    assert (args.file, args.description, args.run_id, args.schema) == \
        (str(upload), "details", "1001-R", "S.json")


@pytest.mark.parametrize("argv, flag", [
    (["-i", "1", "-w", "7", "-m", "x"], "-w/--message-type"),
    (["-i", "1", "-w", "debug", "-m", "x"], "-w/--message-type"),
    (["-i", "1", "-w", "0", "-m", ""], "-m/--message"),
    (["-i", "1", "-w", "0", "-m", "   "], "-m/--message"),
    (["-i", "1", "-w", "0"], "-m/--message"),
    (["-i", "", "-w", "0", "-m", "x"], "-i/--integration-id"),
    (["-w", "0", "-m", "x"], "-i/--integration-id"),
    (["-i", "1", "-w", "0", "-m", "x", "-f", "/no/such/file.csv"], "-f/--file"),
])
def test_adding_log_bad_values_exit_2(capsys, argv, flag):
    assert flag in refused(capsys, cli.adding_log_parser(), P + argv)


def test_adding_log_refuses_a_directory_as_file(capsys, tmp_path):
    err = refused(capsys, cli.adding_log_parser(), P + ["-i", "1", "-w", "0", "-m", "x", "-f", str(tmp_path)])
    assert "-f/--file" in err and "not a regular file" in err


# ---------------------------------------------------------------- IntegrationWrapperRunController.py

@pytest.mark.parametrize("argv, action, errors, force", [
    (["-t", "start"], "start", 0, False),
    (["-t", "START", "--force"], "start", 0, True),
    (["-t", "stop"], "stop", 0, False),
    (["-t", "stop", "-e", "1", "-r", "1001-R"], "stop", 1, False),
    (["--action", "stop", "--errors", "0"], "stop", 0, False),
])
def test_run_controller_good(argv, action, errors, force):
    args = parse(cli.run_controller_parser(), P + ["-i", "1001"] + argv)
    assert (args.action, args.errors, args.force) == (action, errors, force)


@pytest.mark.parametrize("argv, flags", [
    (["-t", "restart"], ["-t/--action", "restart"]),
    (["-t", "stop", "-e", "2"], ["-e/--errors"]),
    (["-t", "stop", "-e", "x"], ["-e/--errors"]),
    ([], ["-t/--action"]),
    (["-t", "start", "-e", "1"], ["-e/--errors", "-t start"]),
    (["-t", "start", "-e", "0"], ["-e/--errors", "-t start"]),
    (["-t", "start", "-r", "K"], ["-r/--run-id", "-t start"]),
    (["-t", "stop", "--force"], ["--force", "-t stop"]),
])
def test_run_controller_bad_exit_2(capsys, argv, flags):
    err = refused(capsys, cli.run_controller_parser(), P + ["-i", "1001"] + argv)
    for flag in flags:
        assert flag in err


# ---------------------------------------------------------------- help texts

@pytest.mark.parametrize("make", [cli.wrapper_parser, cli.adding_log_parser, cli.run_controller_parser])
def test_every_flag_has_help_and_the_epilog_lists_exit_codes(make):
    parser = make()
    assert parser.description
    for action in parser._actions:
        assert action.help, action.option_strings
    text = parser.format_help()
    for code in ("0", "1", "2", "3", "4", "5", "75", "128+N"):
        assert "\n  %s " % code in text


# ---------------------------------------------------------------- run_command

@pytest.mark.parametrize("error, code", [
    (UsageError("Passwords.json: missing \"URL\""), 2),
    (UnreachableError("cannot reach https://x"), 3),
    (NotFoundError("no running run"), 4),
    (DisabledError("integration disabled"), 5),
    (ApiError("OneVizion answered 500", 500), 3),
    (HubError("plain"), 2),
])
def test_run_command_maps_hub_errors_to_their_exit_codes(capsys, error, code):
    def main():
        raise error

    assert cli.run_command(main) == code == error.exit_code
    err = capsys.readouterr().err
    assert err == "error: %s\n" % error.message
    assert "Traceback" not in err


def test_run_command_returns_mains_code(capsys):
    assert cli.run_command(lambda: 1) == 1
    assert cli.run_command(lambda: None) == 0
    assert capsys.readouterr().err == ""


def test_run_command_unexpected_exception_is_one_line_and_logged(capsys, caplog):
    def main():
        raise ValueError("boom")

    logger = logging.getLogger("test.hub")
    with caplog.at_level(logging.ERROR, logger="test.hub"):
        assert cli.run_command(main, logger=logger) == cli.EXIT_INTERNAL == 1
    assert capsys.readouterr().err == "internal error: ValueError: boom\n"
    assert caplog.records[0].exc_info is not None  # the traceback goes to the log file only


def test_run_command_keyboard_interrupt_is_130(capsys):
    def main():
        raise KeyboardInterrupt

    assert cli.run_command(main) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_run_command_lets_system_exit_through():
    with pytest.raises(SystemExit):
        cli.run_command(lambda: cli.parse(cli.wrapper_parser(), ["--bogus"]))


def test_run_command_masks_secrets_in_what_it_prints(capsys):
    def main():
        raise RuntimeError("login failed for hunter2-secret")

    cli.run_command(main, secrets=lambda: ("hunter2-secret", None))
    err = capsys.readouterr().err
    assert "hunter2-secret" not in err and "***" in err
