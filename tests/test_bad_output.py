"""Bad output from the child (SPEC §5 steps 6-7): bytes no log viewer wants, one enormous line, and
printed paths that are not regular files. None may crash, hang or upload anything; each case says
what the Log records read instead.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.hubtest import fixture_command

REPLACEMENT = "\ufffd"


def only_run(hub, key):
    runs = hub.runs(key)
    assert len(runs) == 1, runs
    return runs[0]


def run_lines(hub, *args, name="Output"):
    """Run says.py with `args`; return (exit code, run, Log records)."""
    key = hub.add_integration(name)
    code = hub.wrapper(hub.integrations_file({"IntegrationName": name,
                                              "ExecutablePath": fixture_command("says.py", *args)}))
    run = only_run(hub, key)
    return code, run, hub.logs(run["TRACKOR_KEY"])


# ---------------------------------------------------------------- bytes

@pytest.mark.parametrize("raw, expected", [
    (b"a\x00b\n", ["a" + REPLACEMENT + "b"]),                                   # NUL
    (b"\x00\x00\x00\n", [REPLACEMENT * 3]),                                      # only NULs
    (b"caf\xe9 \xff\xfe end\n", ["caf" + REPLACEMENT + " " + REPLACEMENT * 2 + " end"]),  # not UTF-8
    (b"\xc3\n", [REPLACEMENT]),                                                  # a cut multi-byte character
    (b"\xed\xa0\x80 surrogate\n", [REPLACEMENT * 3 + " surrogate"]),             # CESU / lone surrogate
    (b"\x1b[31mred\x1b[0m and \x1b[1;32mgreen\x1b[0m\n", ["red and green"]),    # ANSI colours
    (b"\x1b]0;window title\x07titled\n", ["titled"]),                           # OSC title
    (b"  0%\r 50%\r100% done\n", ["100% done"]),                                 # a \r progress bar
    (b"\x1b[2K\r[#####     ] 50%\x1b[2K\r[##########] 100%\r\n", ["[##########] 100%"]),
    (b"bell\x07 and backspace\x08\n", ["bell" + REPLACEMENT + " and backspace" + REPLACEMENT]),
    (b"tab\tkept\n", ["tab\tkept"]),
])
def test_unprintable_bytes_become_readable_text(hub, raw, expected):
    code, _, records = run_lines(hub, "raw:" + raw.hex())
    assert code == 0
    assert [r["IL_MESSAGE"] for r in records] == expected
    assert [r["IL_DESCRIPTION"] for r in records] == expected


def marker(record):
    """(k, N) of a "(part k/N) " marker; N is None for a part sent before the line ended ("k/…")."""
    number, total = record["IL_MESSAGE"][len("(part "):].split(")")[0].split("/")
    return int(number), (None if total == "\u2026" else int(total))


def test_a_5_mb_line_is_delivered_whole_in_marked_parts(hub):
    size = 5 * 1000 * 1000
    code, _, records = run_lines(hub, "long:%d" % size, "out:after")
    assert code == 0
    parts = -(-size // 65000)
    assert len(records) == parts + 1
    # Parts sent before the line's end say "(part k/…)"; those after it know the total.
    numbered = [marker(r) for r in records[:-1]]
    assert [n for n, _ in numbered] == list(range(1, parts + 1))
    assert all(total in (parts, None) for _, total in numbered) and numbered[-1] == (parts, parts)
    assert records[-2]["IL_MESSAGE"].startswith("(part %d/%d) " % (parts, parts))
    assert sum(len(r["IL_DESCRIPTION"]) for r in records[:-1]) == size
    assert all(len(r["IL_MESSAGE"]) <= 255 and len(r["IL_DESCRIPTION"]) <= 65000 for r in records)
    assert records[-1]["IL_MESSAGE"] == "after"


def test_a_50_mb_line_neither_crashes_nor_hangs_the_wrapper(hub, capsys):
    """770 records of 65,000 characters take OneVizion a while; with a short drain the wrapper ends in
    time, says the rest waits in the journal (exit 75), and never crashes."""
    key = hub.add_integration("Huge")
    started = time.monotonic()
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Huge", "ExecutablePath": fixture_command(
        "says.py", "long:%d" % (50 * 1000 * 1000))}), "--drain-seconds", "1")
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert code in (0, 75), err
    assert "Traceback" not in err and "internal error" not in err
    assert code == 0 or "kept in the journal" in err
    run = only_run(hub, key)
    parts = [marker(r) for r in hub.logs(run["TRACKOR_KEY"])]
    assert [n for n, _ in parts] == list(range(1, len(parts) + 1))
    assert all(total in (770, None) for _, total in parts)


# ---------------------------------------------------------------- printed paths that are not regular files

def _fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return str(path)


def _device(tmp_path):
    return "/dev/null"


def _zero_device_link(tmp_path):
    (tmp_path / "zero").symlink_to("/dev/zero")
    return str(tmp_path / "zero")


def _symlink_loop(tmp_path):
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return str(tmp_path / "loop-a")


def _dangling_link(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere.csv")
    return str(tmp_path / "dangling")


def _directory(tmp_path):
    return str(tmp_path)


def _socket(tmp_path):
    import socket
    path = str(tmp_path / "sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    _socket.keep = sock  # closed with the test process; the path is what matters
    return path


def _too_long(tmp_path):
    return "/" + "x" * 5000 + ".csv"


def _nul_in_path(tmp_path):
    return str(tmp_path) + "/a\x00b.csv"


@pytest.mark.parametrize("make", [_fifo, _device, _zero_device_link, _symlink_loop, _dangling_link, _directory,
                                  _socket, _too_long, _nul_in_path], ids=lambda f: f.__name__.strip("_"))
def test_a_printed_path_that_is_not_a_regular_file_is_an_ordinary_line(hub, tmp_path, make):
    path = make(tmp_path)
    started = time.monotonic()
    code, run, records = run_lines(hub, "raw:" + (path + "\n").encode().hex())
    assert time.monotonic() - started < 10
    assert code == 0
    assert len(records) == 1 and not records[0]["IL_FILE"], records
    assert not run["IR_FILE"]
    assert hub.sandbox.stats()["upload"] == 0


def test_a_10_gb_sparse_file_is_a_warning_and_nothing_is_uploaded(hub, tmp_path):
    big = tmp_path / "huge.csv"
    with open(big, "wb") as handle:
        handle.truncate(10 * 1000 * 1000 * 1000)
    started = time.monotonic()
    code, run, records = run_lines(hub, "out:" + str(big))
    assert time.monotonic() - started < 10
    assert code == 0
    [record] = records
    assert record["IL_MESSAGE_TYPE"] == "Warning" and not record["IL_FILE"]
    assert "10000.0 MB not uploaded: over the upload limit of 100 MB (--max-upload-mb)" in record["IL_DESCRIPTION"]
    assert not run["IR_FILE"] and hub.sandbox.stats()["upload"] == 0


def test_a_file_just_over_a_small_limit_is_a_warning(hub, tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(b"x" * 1_500_000)
    key = hub.add_integration("Limit")
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Limit", "ExecutablePath": fixture_command(
        "says.py", "out:" + str(path))}), "--max-upload-mb", "1") == 0
    [record] = hub.logs(only_run(hub, key)["TRACKOR_KEY"])
    assert record["IL_MESSAGE_TYPE"] == "Warning" and "over the upload limit of 1 MB" in record["IL_DESCRIPTION"]
    assert hub.sandbox.stats()["upload"] == 0
