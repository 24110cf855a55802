"""hub.child: argv building, and real child processes (scripts in tests/fixtures/)."""

import os
import signal
import stat
import sys
import threading
import time

import pytest

from hub.child import Child, ChildOutcome, ChildStartError, build_argv, describe_outcome
from hub.errors import UsageError
from hub.vocabulary import STDERR, STDOUT

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture(name, *args):
    return [sys.executable, os.path.join(FIXTURES, name)] + list(args)


class Collector:
    """An on_output callback that keeps every chunk and can wait for a marker."""

    def __init__(self, fail=False):
        self.chunks = []
        self.fail = fail
        self.changed = threading.Condition()

    def __call__(self, stream, data, at):
        with self.changed:
            self.chunks.append((stream, data, at))
            self.changed.notify_all()
        if self.fail:
            raise RuntimeError("consumer broke")

    def data(self, stream):
        return b"".join(data for s, data, _ in list(self.chunks) if s == stream)

    def wait_for(self, stream, marker, timeout=2.0):
        with self.changed:
            assert self.changed.wait_for(lambda: marker in self.data(stream), timeout), marker


@pytest.fixture
def spawn():
    """Start a Child; whatever happens, its whole group is killed and reaped at the end."""
    children = []

    def _spawn(argv, cwd=FIXTURES, env=None, on_output=None, **options):
        out = on_output or Collector()
        child = Child(argv, cwd, dict(os.environ) if env is None else env, out, **options)
        child.start()
        children.append(child)
        return child, out

    yield _spawn
    for child in children:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def live_members(pgid):
    """Processes of the group that are not zombies (this container's init may not reap
    orphans, so a dead grandchild can linger as a zombie in the group)."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry))
    return members


def assert_group_gone(pgid, within=1.0):
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if not live_members(pgid):
            return
        assert time.monotonic() < deadline, "group %d still has %s" % (pgid, live_members(pgid))
        time.sleep(0.02)


# ---- build_argv ---------------------------------------------------------------------

def test_build_argv_splits_like_a_shell():
    assert build_argv("prog 'a b' \"c d\" e\\ f '' x", False, "/", {}) == \
        ["prog", "a b", "c d", "e f", "", "x"]


def test_build_argv_expands_variables_and_keeps_a_value_with_spaces_in_one_argument():
    env = {"PW": "s e c", "U": "bob"}
    argv = build_argv("prog --pw ${PW} -u $U \"x${PW}y\" '${PW}' \\$U cost$", False, "/", env)
    assert argv == ["prog", "--pw", "s e c", "-u", "bob", "xs e cy", "${PW}", "$U", "cost$"]


def test_build_argv_treats_backslashes_in_double_quotes_like_sh():
    argv = build_argv(r'p "a\"b" "a\\b" "a\nb" "\$X" a\ b', False, "/", {})
    assert argv == ["p", 'a"b', "a\\b", "a\\nb", "$X", "a b"]


def test_build_argv_names_an_unset_variable_but_never_a_value():
    with pytest.raises(UsageError) as caught:
        build_argv("prog --token hunter2 ${MISSING}", False, "/", {})
    assert caught.value.message == "ExecutablePath: ${MISSING} is not set in the environment"


@pytest.mark.parametrize("text", ["prog 'hunter2", 'prog "hunter2', "prog hunter2\\"])
def test_build_argv_refuses_unbalanced_quotes_without_quoting_them(text):
    with pytest.raises(UsageError) as caught:
        build_argv(text, False, "/", {})
    assert "ExecutablePath" in caught.value.message
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize("shell", [False, True])
@pytest.mark.parametrize("text", ["", "   "])
def test_build_argv_refuses_an_empty_command(text, shell):
    with pytest.raises(UsageError, match="ExecutablePath"):
        build_argv(text, shell, "/", {})


def test_build_argv_refuses_a_bad_variable_reference():
    with pytest.raises(UsageError, match="ExecutablePath"):
        build_argv("prog ${NOT CLOSED", False, "/", {})


def test_build_argv_resolves_a_relative_program_against_the_working_directory():
    assert build_argv("./run.sh a", False, "/opt/int", {}) == ["/opt/int/run.sh", "a"]
    assert build_argv("bin/../run.sh", False, "/opt/int", {})[0] == "/opt/int/run.sh"
    assert build_argv("/usr/bin/env a", False, "/opt/int", {})[0] == "/usr/bin/env"
    assert build_argv("python3 x.py", False, "/opt/int", {}) == ["python3", "x.py"]


def test_build_argv_with_shell_passes_the_text_to_sh_untouched():
    text = "cat ${FILE} | grep 'x y' > out.txt"
    assert build_argv(text, True, "/", {}) == ["/bin/sh", "-c", text]


# ---- running a child ----------------------------------------------------------------

def test_stdout_and_stderr_keep_their_order_within_each_stream(spawn):
    child, out = spawn(fixture("interleaved.py", "200"))
    outcome = child.wait()
    assert outcome.exit_code == 0 and outcome.signal is None
    assert out.data(STDOUT) == "".join("out %d\n" % n for n in range(0, 200, 2)).encode()
    assert out.data(STDERR) == "".join("err %d\n" % n for n in range(1, 200, 2)).encode()
    for stream in (STDOUT, STDERR):
        times = [at for s, _, at in out.chunks if s == stream]
        assert times == sorted(times)
        assert all(outcome.started_at <= at for at in times)


def test_a_flood_of_output_does_not_deadlock_and_every_byte_arrives(spawn):
    size = 5 * 1024 * 1024
    child, out = spawn(fixture("flood.py", str(size)))
    outcome = child.wait()
    assert outcome.exit_code == 0
    assert out.data(STDOUT) == (bytes(range(256)) * (size // 256 + 1))[:size]
    assert out.data(STDERR) == b"done\n"


def test_bytes_that_are_not_utf8_pass_through_unchanged(spawn):
    child, out = spawn(fixture("bad_utf8.py"))
    child.wait()
    assert out.data(STDOUT) == b"caf\xe9 \xff\xfe ok\r\n\xc3\x28 last"
    assert out.data(STDERR) == b"\x80err\n"


def test_a_failing_consumer_does_not_stall_the_child(spawn):
    child, out = spawn(fixture("flood.py", str(1024 * 1024)), on_output=Collector(fail=True))
    assert child.wait().exit_code == 0
    assert isinstance(child.callback_error, RuntimeError)
    assert len(out.data(STDOUT)) == 1024 * 1024


@pytest.mark.parametrize("how, number, exit_code, sig", [
    ("exit", 0, 0, None), ("exit", 3, 3, None),
    ("signal", 9, None, 9), ("signal", 15, None, 15)])
def test_the_outcome_tells_the_exit_code_or_the_signal(spawn, how, number, exit_code, sig):
    child, _ = spawn(fixture("ends.py", how, str(number)))
    outcome = child.wait()
    assert (outcome.exit_code, outcome.signal) == (exit_code, sig)
    assert not (outcome.timed_out or outcome.killed_after_grace or outcome.pipes_left_open)
    assert outcome.stopped_by is None
    assert outcome.started_at <= outcome.ended_at


def test_the_child_leads_its_own_process_group(spawn):
    child, _ = spawn(fixture("sleeper.py"))
    assert os.getpgid(child.pid) == child.pid != os.getpgrp()
    assert os.getsid(child.pid) == child.pid


def test_a_timeout_terminates_the_child(spawn):
    started = time.monotonic()
    child, _ = spawn(fixture("sleeper.py"), timeout=0.3, grace=5.0)
    outcome = child.wait()
    assert time.monotonic() - started < 2.0
    assert outcome.timed_out and outcome.signal == signal.SIGTERM
    assert not outcome.killed_after_grace and outcome.stopped_by is None


def test_a_timeout_kills_a_child_that_ignores_sigterm_after_the_grace(spawn):
    started = time.monotonic()
    child, _ = spawn(fixture("sleeper.py", "ignore-term"), timeout=0.5, grace=0.3)
    outcome = child.wait()
    assert 0.75 < time.monotonic() - started < 2.5
    assert outcome.timed_out and outcome.killed_after_grace
    assert outcome.signal == signal.SIGKILL


def test_stop_reaches_the_whole_group_and_leaves_no_orphan(spawn):
    child, out = spawn(fixture("grandchild.py", "stay"), grace=5.0)
    out.wait_for(STDOUT, b"\n")
    grandchild = int(out.data(STDOUT).split()[1])
    assert os.getpgid(grandchild) == child.pid
    child.stop(signal.SIGTERM)
    outcome = child.wait()
    assert outcome.stopped_by == signal.SIGTERM and outcome.signal == signal.SIGTERM
    assert not outcome.killed_after_grace and not outcome.pipes_left_open
    assert grandchild not in live_members(child.pid)
    assert_group_gone(child.pid)


def test_stop_kills_a_child_that_ignores_the_signal_after_the_grace(spawn):
    child, out = spawn(fixture("sleeper.py", "ignore-term"), grace=0.3)
    out.wait_for(STDOUT, b"ready")
    child.stop(signal.SIGTERM)
    outcome = child.wait()
    assert outcome.stopped_by == signal.SIGTERM and outcome.signal == signal.SIGKILL
    assert outcome.killed_after_grace and not outcome.timed_out
    assert_group_gone(child.pid)


def test_stop_works_from_a_signal_handler_while_wait_blocks(spawn):
    child, out = spawn(fixture("sleeper.py"), grace=5.0)
    out.wait_for(STDOUT, b"ready")
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: child.stop(signal.SIGINT))
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        outcome = child.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert outcome.stopped_by == signal.SIGINT
    # Python turns SIGINT into KeyboardInterrupt: exit code 1 (or the signal, if it came early)
    assert outcome.exit_code == 1 or outcome.signal == signal.SIGINT


def test_a_grandchild_holding_the_pipes_does_not_hold_wait_beyond_the_pipe_grace(spawn):
    started = time.monotonic()
    child, out = spawn(fixture("grandchild.py", "exit"), pipe_grace=0.3)
    outcome = child.wait()
    assert time.monotonic() - started < 1.5
    assert outcome.exit_code == 0 and outcome.pipes_left_open
    grandchild = int(out.data(STDOUT).split()[1])
    assert grandchild in live_members(child.pid)  # left alone; the spawn fixture kills it
    chunks = len(out.chunks)
    time.sleep(0.05)
    assert len(out.chunks) == chunks


def test_the_environment_is_passed_exactly_and_stdin_is_dev_null(spawn):
    import json
    env = {"ONLY": "this", "SPACES": "a b", "PATH": os.environ.get("PATH", "")}
    child, out = spawn(fixture("show_env.py"), env=env)
    assert child.wait().exit_code == 0
    report = json.loads(out.data(STDOUT))
    assert report == {"env": env, "stdin_is_devnull": True, "stdin_read": ""}


def test_a_relative_program_runs_from_the_working_directory(spawn):
    argv = build_argv("./ends.py exit 4", False, FIXTURES, {})
    child, _ = spawn([sys.executable] + argv)
    assert child.wait().exit_code == 4


def _start_error(argv, cwd=FIXTURES):
    child = Child(argv, cwd, dict(os.environ), Collector())
    with pytest.raises(ChildStartError) as caught:
        child.start()
    assert "hunter2" not in caught.value.message
    return caught.value.message


def test_could_not_start_names_the_reason_and_the_program_only(tmp_path):
    missing = str(tmp_path / "nope.sh")
    assert _start_error([missing, "hunter2"]) == "no such program: " + missing
    assert _start_error(["hub-no-such-program", "hunter2"]) == \
        "no such program: hub-no-such-program"
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert _start_error([str(plain), "hunter2"]) == "not executable: %s" % plain
    assert _start_error([str(tmp_path), "hunter2"]) == "is a directory: %s" % tmp_path
    gone = str(tmp_path / "gone")
    assert _start_error([sys.executable, "hunter2"], cwd=gone) == \
        "working directory does not exist: " + gone


# ---- describe_outcome ---------------------------------------------------------------

def outcome(**changes):
    fields = dict(exit_code=0, signal=None, timed_out=False, stopped_by=None,
                  killed_after_grace=False, pipes_left_open=False, started_at=1.0,
                  ended_at=2.0, grace=10.0)
    fields.update(changes)
    return ChildOutcome(**fields)


@pytest.mark.parametrize("changes, text", [
    ({}, None),
    ({"exit_code": 3}, "exit code 3"),
    ({"exit_code": None, "signal": 15}, "terminated by SIGTERM"),
    ({"exit_code": None, "signal": 9}, "killed by SIGKILL"),
    ({"exit_code": None, "signal": 15, "timed_out": True},
     "terminated by SIGTERM after a Timeout of 5 s"),
    ({"exit_code": None, "signal": 9, "timed_out": True, "killed_after_grace": True},
     "killed by SIGKILL after a Timeout of 5 s"),
    ({"exit_code": None, "signal": 15, "stopped_by": 15},
     "the wrapper received SIGTERM; terminated by SIGTERM"),
    ({"exit_code": None, "signal": 9, "stopped_by": 1, "killed_after_grace": True},
     "the wrapper received SIGHUP; killed by SIGKILL after the 10 s grace period"),
    ({"exit_code": 0, "stopped_by": 2}, "the wrapper received SIGINT; exit code 0"),
])
def test_describe_outcome(changes, text):
    assert describe_outcome(outcome(**changes), 5.0) == text


def test_describe_outcome_notes_pipes_left_open():
    text = describe_outcome(outcome(pipes_left_open=True), None)
    assert text.startswith("exit code 0; a process the child started kept its output open")
    assert "closed the pipes" in text


def test_describe_outcome_writes_fractional_timeouts_plainly():
    assert describe_outcome(outcome(exit_code=None, signal=15, timed_out=True), 0.5) == \
        "terminated by SIGTERM after a Timeout of 0.5 s"
