"""Installing the hub the way administrators do, with real virtual environments, real pip and
real processes (SPEC sections 8 and 11):

- the README's first command, parsed from the README, builds `.venv` with Debian's /usr/bin/python3
  in a copy of the checkout and runs the demo from it;
- the cron file and the systemd unit of deploy/ run their command lines in a bare environment,
  as cron and systemd start them, against a sandbox;
- `pip install .` into a fresh virtual environment gives the console commands (--version,
  --help, a real run against the packaged sandbox, the journal outside site-packages);
- a Python that lacks the dependencies, or is older than 3.9, gets exit 2 and one line naming
  what is missing and the fix, for each root script.

The tests that build environments are marked `slow` (pytest -m slow runs only them, -m "not slow"
skips them); they are part of the normal suite. Each environment is built once per session; pip's
cache makes the second session fast. The fast tier at the end checks hub.entry's logic in-process.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import urllib.request

import pytest

import hub
from hub import entry, vocabulary
from tests.conftest import REPO_ROOT, write_passwords
from tests.test_demo import cleanup, wait_gone

DEBIAN_PYTHON = "/usr/bin/python3"
SCRIPTS = ("IntegrationWrapper.py", "IntegrationWrapperAddingLog.py", "IntegrationWrapperRunController.py")
COMMANDS = {"integration-wrapper": "IntegrationWrapper.py",
            "integration-wrapper-adding-log": "IntegrationWrapperAddingLog.py",
            "integration-wrapper-run-controller": "IntegrationWrapperRunController.py"}
PIP_TIMEOUT = 900  # a cold pip cache downloads the dependencies and setuptools

with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as _readme:
    README = _readme.read()


# ---------------------------------------------------------------- helpers

_SKIP = {".git", ".venv", "log", "build", "__pycache__", ".pytest_cache", "results"}


def copy_checkout(dest) -> str:
    """The working tree (uncommitted changes included) without environments, logs or build output."""
    def ignore(folder, names):
        return [n for n in names if n in _SKIP or n.startswith(".venv") or n.endswith(".egg-info")
                or re.search(r"\.(db|sqlite3)(-.*)?$", n)]
    shutil.copytree(REPO_ROOT, str(dest), symlinks=True, ignore=ignore)
    return str(dest)


def environment(**extra) -> dict:
    """A minimal environment, as cron gives (PATH, HOME), plus what pip needs on this machine
    (its settings, proxies) and `extra`."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    for name, value in os.environ.items():
        if name.startswith("PIP_") or name.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            env[name] = value
    env.update(extra)
    return env


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, **kwargs)


def make_venv(folder, python=sys.executable, pip=True) -> str:
    """A virtual environment made by `python`; returns its folder."""
    argv = [python, "-m", "venv"] + ([] if pip else ["--without-pip"]) + [str(folder)]
    result = run(argv, env=environment(), timeout=PIP_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return str(folder)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


def runs_by_integration(url: str) -> dict:
    """{Integration name: [run status, ...]} as the sandbox holds them."""
    names = {i["TRACKOR_ID"]: i["INT_NAME"] for i in get_json(url + "/_sandbox/trackors/Integration")}
    runs = {}
    for item in get_json(url + "/_sandbox/trackors/IntegrationRun"):
        runs.setdefault(names[item["_parent_id"]], []).append(item["IR_STATUS"])
    return runs


def example_names() -> list:
    with open(os.path.join(REPO_ROOT, "Integration.example.json"), encoding="utf-8") as source:
        return [item["IntegrationName"] for item in json.load(source)]


def requirement_names(path: str) -> set:
    """The package names a requirements file lists (comments, -r lines and versions left out)."""
    names = set()
    with open(path, encoding="utf-8") as source:
        for line in source:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                names.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return names


def one_daily_import(folder) -> str:
    """An Integration.json with one quick entry that the sandbox knows (seeded from the examples)."""
    path = os.path.join(str(folder), "Integration.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump([{"IntegrationName": "Example Daily Import",
                    "ExecutablePath": "python3 examples/daily_import.py --rows 2 --pause 0"}], out)
    return path


def error_line(result) -> str:
    """The one line a refused start prints, after checking it is one line, on stderr, no traceback."""
    assert result.returncode == vocabulary.EXIT_USAGE, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def debian_python_with_venv() -> bool:
    if not os.path.exists(DEBIAN_PYTHON):
        return False
    return run([DEBIAN_PYTHON, "-c", "import venv, ensurepip"], env=environment()).returncode == 0


def old_pythons() -> list:
    """Pythons older than 3.9 found on this machine (PATH and pyenv), one per version."""
    found = {}
    candidates = [shutil.which(name) for name in ("python3.8", "python3.7", "python3.6", "python2.7")]
    pyenv = os.path.join(os.path.expanduser("~"), ".pyenv", "versions")
    if os.path.isdir(pyenv):
        for version in sorted(os.listdir(pyenv)):
            for name in ("python3", "python"):
                candidates.append(os.path.join(pyenv, version, "bin", name))
    for path in candidates:
        if not path or not os.access(path, os.X_OK):
            continue
        probe = run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], env=environment())
        version = probe.stdout.strip()
        if probe.returncode == 0 and version and tuple(map(int, version.split("."))) < (3, 9):
            found.setdefault(version, path)
    return sorted(found.items())


# ---------------------------------------------------------------- the README's first command

def readme_first_command() -> str:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)[0]


@pytest.fixture(scope="session")
def readme_checkout(tmp_path_factory):
    """A copy of the checkout where the README's first command ran with Debian's python3 and
    cron's PATH: (its root, the CompletedProcess). The demo gets --no-wait and a free port."""
    if not debian_python_with_venv():
        pytest.skip("needs Debian's /usr/bin/python3 with its venv module (apt-get install python3-venv)")
    command = readme_first_command()
    assert command.startswith("python3 -m venv .venv && ") and command.endswith(" demo.py"), command
    root = copy_checkout(tmp_path_factory.mktemp("readme") / "integration-hub")
    port = free_port()
    try:
        result = run(["/bin/sh", "-c", "%s --no-wait --port %d" % (command, port)], cwd=root,
                     env=environment(), timeout=PIP_TIMEOUT)
    finally:
        wait_gone(port)
        cleanup(None, port)
    return root, result


@pytest.mark.slow
def test_the_readmes_first_command_builds_the_venv_with_debians_python_and_runs_the_demo(readme_checkout):
    root, result = readme_checkout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Runs in the sandbox" in result.stdout
    for name in example_names():
        assert name in result.stdout
    with open(os.path.join(root, ".venv", "pyvenv.cfg"), encoding="utf-8") as cfg:
        assert re.search(r"^home = /usr/bin$", cfg.read(), flags=re.M)
    assert not os.path.exists(os.path.join(root, "log")), "the demo keeps its log in a temporary folder"


# ---------------------------------------------------------------- deploy/: cron and systemd

def deployed(text: str, root: str, tmp) -> str:
    """A deploy/ file's text with the server's folders replaced by test folders."""
    for server, here in (("/opt/integration-hub", root), ("/etc/integration-hub", os.path.join(str(tmp), "etc")),
                         ("/var/lib/integration-hub", os.path.join(str(tmp), "var"))):
        text = text.replace(server, here)
    return text


def cron_file(root: str, tmp):
    """(its variables, its jobs as (schedule, user, command)) from deploy/cron/integration-hub."""
    with open(os.path.join(REPO_ROOT, "deploy", "cron", "integration-hub"), encoding="utf-8") as source:
        text = deployed(source.read(), root, tmp)
    variables, jobs = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assignment = re.match(r"^([A-Z_]+)=(.*)$", line)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        fields = line.split(None, 6)
        jobs.append((" ".join(fields[:5]), fields[5], fields[6]))
    return variables, jobs


@pytest.mark.slow
def test_the_cron_files_nightly_and_replay_lines_run_as_cron_runs_them(readme_checkout, sandbox, tmp_path):
    root, built = readme_checkout
    assert built.returncode == 0, built.stderr[-3000:]
    os.makedirs(str(tmp_path / "etc"))
    write_passwords(tmp_path / "etc", sandbox.url)
    one_daily_import(tmp_path / "etc")
    variables, jobs = cron_file(root, tmp_path)
    assert variables["PATH"] == "/usr/bin:/bin"
    assert variables["HUB_LOG_DIR"] == str(tmp_path / "var")
    for _, user, command in jobs:
        assert user == "integration-hub"
        assert " %s/.venv/bin/python %s/IntegrationWrapper.py " % (root, root) in command, command
    nightly = [c for _, _, c in jobs if " -i " in c and "--name" not in c and "--control-process" not in c]
    replay = [c for _, _, c in jobs if "--replay" in c]
    assert len(nightly) == 1 and len(replay) == 1
    # What cron gives a job: the file's variables, HOME and LOGNAME, and its SHELL.
    env = dict(variables, HOME=str(tmp_path), LOGNAME="integration-hub")
    env.pop("MAILTO")
    for command in (nightly[0], replay[0]):
        result = run([variables["SHELL"], "-c", command], env=env, cwd=str(tmp_path), timeout=120)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert runs_by_integration(sandbox.url)["Example Daily Import"] == ["Executed without Warnings"]
    assert os.path.isfile(str(tmp_path / "var" / "journal.sqlite3"))
    assert not os.path.exists(os.path.join(root, "log"))


def unit(path: str) -> dict:
    """{key: [values]} of a systemd unit file (sections merged; enough for these units)."""
    keys = {}
    with open(path, encoding="utf-8") as source:
        for line in source:
            if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
                key, value = line.rstrip("\n").split("=", 1)
                keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@pytest.mark.slow
def test_the_systemd_units_verify_and_their_command_runs_in_a_bare_environment(readme_checkout, sandbox, tmp_path):
    """systemd itself does not run here: this checks the files with systemd-analyze and runs the
    service's ExecStart as systemd would (its Environment, WorkingDirectory, nothing else)."""
    root, built = readme_checkout
    assert built.returncode == 0, built.stderr[-3000:]
    units = tmp_path / "units"
    units.mkdir()
    for name in ("integration-hub.service", "integration-hub.timer"):
        with open(os.path.join(REPO_ROOT, "deploy", "systemd", name), encoding="utf-8") as source:
            (units / name).write_text(deployed(source.read(), root, tmp_path), encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = run([analyze, "verify", "--man=no", str(units / "integration-hub.service"),
                      str(units / "integration-hub.timer")], env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
        complaints = [line for line in result.stderr.splitlines() if "integration-hub" in line]
        assert result.returncode == 0 and complaints == [], result.stderr

    service = unit(str(units / "integration-hub.service"))
    assert service["Type"] == ["oneshot"] and service["User"] == ["integration-hub"]
    assert service["KillMode"] == ["mixed"]
    assert unit(str(units / "integration-hub.timer"))["Persistent"] == ["true"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # systemd's default PATH covers these
    for assignment in service["Environment"]:
        name, value = assignment.split("=", 1)
        env[name] = value
    assert env["HUB_LOG_DIR"] == os.path.join(str(tmp_path), "var")
    os.makedirs(env["HUB_LOG_DIR"])  # StateDirectory= creates it
    os.makedirs(str(tmp_path / "etc"))
    write_passwords(tmp_path / "etc", sandbox.url)
    one_daily_import(tmp_path / "etc")
    result = run(shlex.split(service["ExecStart"][0]), env=env, cwd=service["WorkingDirectory"][0])
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert runs_by_integration(sandbox.url)["Example Daily Import"] == ["Executed without Warnings"]
    assert os.path.isfile(os.path.join(env["HUB_LOG_DIR"], "journal.sqlite3"))


# ---------------------------------------------------------------- pip install .

@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> str:
    """A copy of the checkout to build from (a build leaves build/ and *.egg-info beside it)."""
    return copy_checkout(tmp_path_factory.mktemp("source") / "integration-hub")


def pip_install(venv: str, source: str, *options: str):
    result = run([os.path.join(venv, "bin", "pip"), "install", "-q", *options, "."], cwd=source,
                 env=environment(), timeout=PIP_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def installed(tmp_path_factory, source_tree) -> str:
    """A fresh virtual environment with `pip install .` of the checkout; returns its folder."""
    venv = make_venv(tmp_path_factory.mktemp("installed") / "venv")
    pip_install(venv, source_tree)
    return venv


@pytest.mark.slow
def test_pip_install_gives_each_console_command_with_version_and_help(installed):
    for command, script in COMMANDS.items():
        path = os.path.join(installed, "bin", command)
        version = run([path, "--version"], env=environment())
        assert (version.returncode, version.stdout, version.stderr) == (0, "%s %s\n" % (script, hub.__version__), "")
        usage = run([path, "--help"], env=environment())
        assert usage.returncode == 0 and usage.stderr == "", usage.stderr
        assert usage.stdout.startswith("usage: %s " % script) and "exit codes:" in usage.stdout
    sandbox_help = run([os.path.join(installed, "bin", "integration-hub-sandbox"), "--help"], env=environment())
    assert sandbox_help.returncode == 0 and "--port" in sandbox_help.stdout
    metadata = run([os.path.join(installed, "bin", "python"), "-c",
                    "import importlib.metadata as m, json; "
                    "print(json.dumps([m.version('integration-hub'), m.requires('integration-hub')]))"],
                   env=environment())
    version, requires = json.loads(metadata.stdout)
    assert version == hub.__version__
    assert {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires} == \
        requirement_names(os.path.join(REPO_ROOT, "requirements.txt"))


@pytest.mark.slow
def test_an_installed_copy_runs_against_its_packaged_sandbox_and_keeps_its_journal_in_the_state_folder(
        installed, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    shutil.copytree(os.path.join(REPO_ROOT, "examples"), str(work / "examples"))
    env = environment(HOME=str(home))
    server = subprocess.Popen([os.path.join(installed, "bin", "integration-hub-sandbox"), "--port", "0",
                               "--db", ":memory:"], cwd=str(work), env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+)", server.stdout.readline()).group(1)
        # seeded from the example files packaged with the sandbox
        assert sorted(i["INT_NAME"] for i in get_json(url + "/_sandbox/trackors/Integration")) == sorted(example_names())
        passwords = write_passwords(work, url)
        result = run([os.path.join(installed, "bin", "integration-wrapper"), "-p", passwords,
                      "-i", one_daily_import(work)], cwd=str(work), env=env)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert runs_by_integration(url)["Example Daily Import"] == ["Executed without Warnings"]
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()
        server.stderr.close()
    state = home / ".local" / "state" / "integration-hub"
    assert (state / "journal.sqlite3").is_file()
    site = run([os.path.join(installed, "bin", "python"), "-c", "import hub, os; print(os.path.dirname(hub.__path__[0]))"],
               env=env).stdout.strip()
    assert not os.path.exists(os.path.join(site, "log")), "nothing may be written into site-packages"


@pytest.mark.slow
def test_a_console_command_whose_dependencies_are_missing_says_how_to_install_them(tmp_path_factory, source_tree):
    venv = make_venv(tmp_path_factory.mktemp("nodeps") / "venv")
    pip_install(venv, source_tree, "--no-deps")
    line = error_line(run([os.path.join(venv, "bin", "integration-wrapper"), "--version"], env=environment()))
    assert line.startswith("error: integration-wrapper needs the package")
    assert "python-dateutil" in line
    # this Python by its path (the commands' #! line may name python, python3 or python3.N)
    assert re.search(re.escape(os.path.join(venv, "bin", "python")) + r"[0-9.]* -m pip install python-dateutil", line), line


# ---------------------------------------------------------------- a Python that cannot run the hub

@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> str:
    """The Python of a virtual environment with nothing installed (not even pip)."""
    return os.path.join(make_venv(tmp_path_factory.mktemp("bare") / "venv", pip=False), "bin", "python")


def scripts_only(dest) -> str:
    """A checkout reduced to what starting a script needs: hub/, the scripts, requirements.txt."""
    os.makedirs(str(dest))
    shutil.copytree(os.path.join(REPO_ROOT, "hub"), os.path.join(str(dest), "hub"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in SCRIPTS + ("requirements.txt",):
        shutil.copy(os.path.join(REPO_ROOT, name), str(dest))
    return str(dest)


@pytest.fixture(scope="session")
def without_venv(tmp_path_factory) -> str:
    return scripts_only(tmp_path_factory.mktemp("novenv") / "integration-hub")


@pytest.fixture(scope="session")
def with_venv(tmp_path_factory) -> str:
    """A checkout whose .venv exists but has nothing installed."""
    root = scripts_only(tmp_path_factory.mktemp("venv") / "integration-hub")
    make_venv(os.path.join(root, ".venv"), pip=False)
    return root


ARGS = ["-p", "Passwords.json", "-i", "Integration.json"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_without_a_venv_a_python_lacking_the_dependencies_is_told_the_two_commands(script, bare_python, without_venv):
    root = without_venv
    line = error_line(run([bare_python, os.path.join(root, script)] + ARGS, env=environment(), cwd=root))
    assert line.startswith("error: %s needs the package" % script) and "python-dateutil" in line
    assert "cd %s && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" % root in line
    assert "then run %s/.venv/bin/python %s/%s" % (root, root, script) in line
    assert not os.path.exists(os.path.join(root, "log")), "nothing ran"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_with_a_venv_beside_the_scripts_another_python_is_told_the_venvs_python(script, bare_python, with_venv):
    root = with_venv
    line = error_line(run([bare_python, os.path.join(root, script)] + ARGS, env=environment(), cwd=root))
    assert "python-dateutil" in line
    assert line.endswith("Run it with the virtual environment's Python: %s/.venv/bin/python %s/%s"
                         % (root, root, script))
    assert not os.path.exists(os.path.join(root, "log"))


@pytest.mark.slow
def test_the_venvs_own_python_without_the_packages_is_told_to_install_the_requirements(with_venv):
    root = with_venv
    line = error_line(run([os.path.join(root, ".venv", "bin", "python"), os.path.join(root, SCRIPTS[0])] + ARGS,
                          env=environment(), cwd=root))
    assert line.endswith("Install the requirements into it: %s/.venv/bin/pip install -r %s/requirements.txt"
                         % (root, root))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_crons_python3_gets_one_line_and_exit_2(script, with_venv):
    """`env -i PATH=/usr/bin:/bin python3 IntegrationWrapper.py …`: the way cron starts it."""
    if run([DEBIAN_PYTHON, "-c", "import dateutil"], env=environment()).returncode == 0:
        pytest.skip("this machine's /usr/bin/python3 has python-dateutil")
    root = with_venv
    line = error_line(run(["python3", os.path.join(root, script)] + ARGS,
                          env={"PATH": "/usr/bin:/bin"}, cwd=root))
    assert "which %s (Python 3." % DEBIAN_PYTHON in line
    assert "%s/.venv/bin/python %s/%s" % (root, root, script) in line


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_python_older_than_3_9_gets_one_line_and_exit_2(script, with_venv):
    pythons = old_pythons()
    if not pythons:
        pytest.skip("no Python older than 3.9 on this machine")
    root = with_venv
    for version, python in pythons:
        line = error_line(run([python, os.path.join(root, script)] + ARGS, env=environment(), cwd=root))
        assert line.startswith("error: %s needs Python 3.9 or newer; it was started by %s (Python %s."
                               % (script, python, version)), line
        assert "%s/.venv/bin/python %s/%s" % (root, root, script) in line


# ---------------------------------------------------------------- fast tier: hub.entry in-process

def test_entry_exits_with_the_usage_code():
    assert entry.EXIT_USAGE == vocabulary.EXIT_USAGE


def test_this_python_can_run_the_hub():
    assert entry.problem("IntegrationWrapper.py") is None


def test_an_old_python_is_named_with_its_version():
    line = entry.problem("IntegrationWrapper.py", version_info=(3, 8, 18, "final", 0))
    assert "needs Python 3.9 or newer" in line and "(Python 3.8.18)" in line
    assert "\n" not in line


def test_each_missing_package_is_named():
    line = entry.problem("IntegrationWrapper.py", required=(("no_such_module_for_the_hub", "no-such-package"),
                                                            ("json", "not-missing"),
                                                            ("no_such_module_either", "other-package")))
    assert "needs the packages no-such-package, other-package, which" in line
    assert "not-missing" not in line and "\n" not in line


def test_a_package_that_fails_to_import_is_named_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "broken_for_the_hub_test.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = entry.problem("IntegrationWrapper.py", required=(("broken_for_the_hub_test", "broken-package"),))
    assert "broken-package (importing it fails: RuntimeError: half installed)" in line


def test_paths_with_spaces_are_quoted_for_the_shell():
    assert entry._quote("/opt/integration hub/.venv/bin/python") == "'/opt/integration hub/.venv/bin/python'"
    assert entry._quote("/opt/integration-hub") == "/opt/integration-hub"
    assert shlex.split(entry._quote("it's")) == ["it's"]


def test_the_installed_log_folder_follows_xdg_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert entry.installed_log_dir() == os.path.join(str(tmp_path), "integration-hub")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert entry.installed_log_dir() == os.path.join(str(tmp_path), ".local", "state", "integration-hub")


def test_version_prints_the_script_and_the_version(capsys):
    from hub import cli
    for parser, script in ((cli.wrapper_parser, "IntegrationWrapper.py"),
                           (cli.adding_log_parser, "IntegrationWrapperAddingLog.py"),
                           (cli.run_controller_parser, "IntegrationWrapperRunController.py")):
        with pytest.raises(SystemExit) as done:
            cli.parse(parser(), ["--version"])
        assert done.value.code == 0
        assert capsys.readouterr().out == "%s %s\n" % (script, hub.__version__)


def _third_party_imports() -> set:
    """Top-level modules imported anywhere in hub/ and sandbox/ that are not the standard library."""
    stdlib = sysconfig.get_paths()["stdlib"]
    names = set()
    for package in ("hub", "sandbox"):
        folder = os.path.join(REPO_ROOT, package)
        for filename in sorted(os.listdir(folder)):
            if not filename.endswith(".py"):
                continue
            with open(os.path.join(folder, filename), encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    third_party = set()
    for name in names - {"hub", "sandbox", "__future__"}:
        if name in sys.builtin_module_names:
            continue
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None) or ""
        if spec is None or "-packages" in origin or not origin.startswith(stdlib):
            if origin not in ("built-in", "frozen"):
                third_party.add(name)
    return third_party


def test_the_runtime_requirements_are_what_hub_imports():
    """requirements.txt, hub.entry.REQUIRED and the imports of hub/ and sandbox/ name the same packages:
    a dependency the code no longer imports is dropped from both lists, a new one added to both."""
    imported = _third_party_imports()
    assert {module.split(".")[0] for module, _ in entry.REQUIRED} == imported
    assert {package for _, package in entry.REQUIRED} == requirement_names(os.path.join(REPO_ROOT, "requirements.txt"))


def test_dev_requirements_include_the_runtime_ones():
    with open(os.path.join(REPO_ROOT, "requirements-dev.txt"), encoding="utf-8") as source:
        assert "-r requirements.txt" in source.read().splitlines()


# ---------------------------------------------------------------- deploy/kubernetes, checked statically

def _containerfile() -> dict:
    """The Containerfile's instructions: {instruction: [arguments, ...]} (continuations joined)."""
    with open(os.path.join(REPO_ROOT, "deploy", "kubernetes", "Containerfile"), encoding="utf-8") as source:
        text = re.sub(r"\\\n\s*", " ", source.read())
    instructions = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_the_kubernetes_files_agree_with_each_other_and_with_the_checkout():
    """No cluster and no container engine here: this checks what can be checked without them."""
    yaml = pytest.importorskip("yaml")
    folder = os.path.join(REPO_ROOT, "deploy", "kubernetes")
    with open(os.path.join(folder, "cronjob.yaml"), encoding="utf-8") as source:
        cronjob = yaml.safe_load(source)
    with open(os.path.join(folder, "pvc.yaml"), encoding="utf-8") as source:
        pvc = yaml.safe_load(source)
    image = _containerfile()

    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"].endswith(":" + hub.__version__)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}

    # the log folder: on the claim of pvc.yaml, where HUB_LOG_DIR points (in the pod and the image)
    log_mount = mounts[env["HUB_LOG_DIR"]]
    assert volumes[log_mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "HUB_LOG_DIR=%s" % env["HUB_LOG_DIR"] in image["ENV"][0].split()
    # Passwords.json: from a Secret, mounted read-only where -p looks
    args = container["args"]
    passwords = args[args.index("-p") + 1]
    secret_mount = mounts[os.path.dirname(passwords)]
    assert secret_mount["readOnly"] is True
    assert "secret" in volumes[secret_mount["name"]]
    # the image runs as the user the pod asks for, and its default command is the CronJob's
    uid = pod["securityContext"]["runAsUser"]
    assert "--uid %d" % uid in image["RUN"][0] and image["USER"] == ["%d:%d" % (uid, pod["securityContext"]["runAsGroup"])]
    assert json.loads(image["CMD"][0]) == args
    # the entry point is the venv's Python and the wrapper, both made or copied by the Containerfile
    workdir = image["WORKDIR"][0]
    python, script = json.loads(image["ENTRYPOINT"][0])
    assert python == workdir + "/.venv/bin/python" and any("-m venv .venv" in run for run in image["RUN"])
    copied = " ".join(image["COPY"]).split()
    assert os.path.basename(script) in copied and os.path.dirname(script) == workdir
    # every COPY source exists in the checkout (the build context)
    for arguments in image["COPY"]:
        for source in arguments.split()[:-1]:
            assert os.path.exists(os.path.join(REPO_ROOT, source)), source
    # -i names the Integration.json the image holds
    integrations = args[args.index("-i") + 1]
    assert any(c.split()[-1] == os.path.basename(integrations) for c in image["COPY"])


def test_the_readme_and_the_deploy_files_name_this_version():
    """The version is written in hub/__init__.py; the image tags in the docs follow it."""
    tags = set(re.findall(r"integration-hub:(\d+\.\d+\.\d+)", README))
    for name in ("Containerfile", "cronjob.yaml"):
        with open(os.path.join(REPO_ROOT, "deploy", "kubernetes", name), encoding="utf-8") as source:
            tags.update(re.findall(r"integration-hub:(\d+\.\d+\.\d+)", source.read()))
    tags.update(re.findall(r"IntegrationWrapper\.py (\d+\.\d+\.\d+)", README))
    assert tags == {hub.__version__}
