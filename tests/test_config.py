"""hub.config: Passwords.json, Integration.json and Schema.json, good and bad.

Bad input is table-driven: file text -> UsageError -> the parts the message must
hold (file name, key, line/column, did-you-mean) -> what it must never hold
(the secret values below)."""

import datetime
import json
import os
import re

import pytest
import requests

import onevizion
from hub import config, schema as schema_module, vocabulary
from hub.config import (DEFAULT_SCHEMA, Installation, IntegrationEntry, load_integrations,
                        load_passwords, load_schema)
from hub.errors import UsageError
from tests.test_bad_platform import self_signed  # noqa: F401 - a fixture: a real certificate for CABundle

PASSWORD = "pa55-W0rd-XYZ"
ACCESS = "ak-ACCESS-123"
SECRET = "sk-SECRET-456"
SECRETS = (PASSWORD, ACCESS, SECRET)


def write(tmp_path, text, name="Passwords.json", mode=0o600):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    os.chmod(path, mode)
    return str(path)


def installation(**keys):
    section = {"URL": "https://ov.example.com", "UserName": "jsmith", "Password": PASSWORD}
    section.update(keys)
    return json.dumps({"installation": {k: v for k, v in section.items() if v is not DROP}})


DROP = object()
TOKEN = {"UserName": DROP, "Password": DROP, "AccessKey": ACCESS, "SecretKey": SECRET}


# ---------------------------------------------------------------- Passwords.json: bad

BAD_PASSWORDS = [
    # (id, file text, parts the message must contain)
    ("empty", "", ["is empty"]),
    ("blank", "  \n", ["is empty"]),
    ("not-json", '{"installation": {"URL": "x", "Password": "%s" ' % PASSWORD,
     ["not valid JSON", "line 1, column"]),
    ("not-json-line2", '{\n "installation": {"Password": "%s",,}}' % PASSWORD, ["line 2, column"]),
    ("bad-utf8", b'{"installation": {"Password": "\xff\xfe"}}', ["not UTF-8"]),
    ("list", "[1, 2]", ['"installation" section', "got array"]),
    ("no-section", '{"smtp": {"Password": "%s"}}' % PASSWORD, ['missing the "installation" section']),
    ("section-typo", '{"Installation": {}}', ['found "Installation"']),
    ("section-type", '{"installation": "%s"}' % PASSWORD, ["installation: expected an object, got string"]),
    ("unknown-key", installation(Username="jsmith"), ['unknown key "Username"', 'did you mean "UserName"']),
    ("unknown-case", installation(url="x"), ['unknown key "url"', 'did you mean "URL"']),
    ("dup-key", '{"installation": {"Password": "a", "Password": "%s"}}' % PASSWORD,
     ['key "Password" appears twice']),
    ("no-url", installation(URL=DROP), ['missing "URL"']),
    ("empty-url", installation(URL=" "), ["installation.URL: must not be empty"]),
    ("url-type", installation(URL=5), ["installation.URL: expected a string, got number"]),
    ("url-scheme", installation(URL="ftp://ov.example.com"), ['scheme "ftp" is not supported']),
    ("url-creds", installation(URL="https://jsmith:%s@ov.example.com" % PASSWORD),
     ["installation.URL: must not hold credentials"]),
    ("url-port", installation(URL="ov.example.com:99999"), ["installation.URL: not a valid URL"]),
    ("no-creds", installation(UserName=DROP, Password=DROP), ["missing credentials"]),
    ("no-password", installation(Password=DROP), ['"UserName" is given but "Password" is missing']),
    ("no-user", installation(UserName=DROP), ['"Password" is given but "UserName" is missing']),
    ("half-token", installation(UserName=DROP, Password=DROP, SecretKey=SECRET),
     ['"SecretKey" is given but "AccessKey" is missing']),
    ("both-pairs", installation(AccessKey=ACCESS, SecretKey=SECRET), ["not both"]),
    ("password-type", installation(Password=[PASSWORD]), ["installation.Password: expected a string, got array"]),
    ("password-empty", installation(Password=""), ["installation.Password: must not be empty"]),
    ("secret-type", installation(**dict(TOKEN, SecretKey={"v": SECRET})),
     ["installation.SecretKey: expected a string, got object"]),
    ("access-type", installation(**dict(TOKEN, AccessKey=123456)),
     ["installation.AccessKey: expected a string, got number"]),
    ("timezone", installation(Timezone="Mars/Olympus"), ['installation.Timezone: "Mars/Olympus"']),
    ("timezone-case", installation(Timezone="america/new_york"), ['did you mean "America/New_York"']),
    ("timezone-posix", installation(Timezone="XYZ3"), ["installation.Timezone"]),
    ("timezone-path", installation(Timezone="/etc/localtime"), ["installation.Timezone"]),
    ("verify-type", installation(VerifyTLS="false"), ["installation.VerifyTLS: expected true or false"]),
    ("ca-missing", installation(CABundle="nope.pem"), ["installation.CABundle: no such file"]),
    ("ca-and-noverify", installation(CABundle="ca.pem", VerifyTLS=False), ['"CABundle"', '"VerifyTLS"']),
    ("ca-not-pem", installation(CABundle="ca.pem"), ["installation.CABundle:", "holds no CA certificate (PEM)"]),
]


@pytest.mark.parametrize("text, parts", [row[1:] for row in BAD_PASSWORDS],
                         ids=[row[0] for row in BAD_PASSWORDS])
def test_bad_passwords_name_the_file_and_key_never_the_secret(tmp_path, text, parts):
    (tmp_path / "ca.pem").write_text("cert")
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_passwords(path)
    message = caught.value.message
    assert message.startswith(path)
    for part in parts:
        assert part in message
    for secret in SECRETS:
        assert secret not in message


@pytest.mark.parametrize("kind, part", [("missing", "no such file"), ("dir", "is a directory"),
                                        ("huge", "more than the")])
def test_unusable_files_are_refused(tmp_path, kind, part):
    path = tmp_path / "Passwords.json"
    if kind == "dir":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b" " * (schema_module.MAX_FILE_BYTES + 1))
    with pytest.raises(UsageError, match=part) as caught:
        load_passwords(str(path))
    assert caught.value.message.startswith(str(path))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused(tmp_path):
    path = write(tmp_path, installation(), mode=0o000)
    with pytest.raises(UsageError, match="permission denied"):
        load_passwords(path)


def test_unreadable_file_is_refused_even_when_tests_run_as_root(tmp_path, monkeypatch):
    path = write(tmp_path, installation())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(schema_module, "open", denied, raising=False)
    with pytest.raises(UsageError, match="permission denied") as caught:
        load_passwords(path)
    assert caught.value.message.startswith(path)


# ---------------------------------------------------------------- Passwords.json: good

@pytest.mark.parametrize("url, expected", [
    ("https://ov.example.com", "https://ov.example.com"),
    ("ov.example.com", "https://ov.example.com"),
    ("ov.example.com///", "https://ov.example.com"),
    ("HTTP://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("https://ov.example.com/Path/", "https://ov.example.com/Path"),
])
def test_url_gets_a_scheme_and_loses_trailing_slashes(tmp_path, url, expected):
    inst, _ = load_passwords(write(tmp_path, installation(URL=url)))
    assert inst.url == expected


def test_basic_auth(tmp_path):
    inst, warnings = load_passwords(write(tmp_path, installation()))
    assert (inst.user_name, inst.password, inst.access_key) == ("jsmith", PASSWORD, None)
    # The same header requests' HTTPBasicAuth sends.
    expected = requests.Request("GET", inst.url, auth=("jsmith", PASSWORD)).prepare().headers["Authorization"]
    assert inst.authorization() == expected
    assert inst.secrets() == (PASSWORD,)
    assert warnings == []


def test_token_auth_sends_bearer_access_colon_secret(tmp_path):
    inst, _ = load_passwords(write(tmp_path, installation(**TOKEN)))
    # The same header the official client's HTTPBearerAuth sends.
    request = onevizion.HTTPBearerAuth(ACCESS, SECRET)(requests.Request("GET", inst.url).prepare())
    assert inst.authorization() == request.headers["Authorization"] == "Bearer %s:%s" % (ACCESS, SECRET)
    assert set(inst.secrets()) == {ACCESS, SECRET}


def test_timezone_and_local_default(tmp_path):
    inst, _ = load_passwords(write(tmp_path, installation(Timezone="America/New_York")))
    assert inst.timezone_name == "America/New_York"
    assert inst.tzinfo().utcoffset(datetime.datetime(2024, 1, 15)).total_seconds() == -5 * 3600
    local, _ = load_passwords(write(tmp_path, installation(), name="p2.json"))
    assert local.timezone_name is None and local.tzinfo() is not None


def test_verify_tls_and_ca_bundle_relative_to_the_file(tmp_path, self_signed):
    with open(self_signed[0]) as cert:
        (tmp_path / "ca.pem").write_text(cert.read())
    inst, _ = load_passwords(write(tmp_path, installation(CABundle="ca.pem")))
    assert inst.verify == str(tmp_path / "ca.pem")
    off, _ = load_passwords(write(tmp_path, installation(VerifyTLS=False), name="p2.json"))
    assert off.verify is False
    default, _ = load_passwords(write(tmp_path, installation(), name="p3.json"))
    assert default.verify is True


def test_other_top_level_sections_are_ignored(tmp_path):
    text = json.dumps({"installation": json.loads(installation())["installation"],
                       "smtp": {"Host": "x", "Whatever": 1}, "aws": []})
    inst, _ = load_passwords(write(tmp_path, text))
    assert inst.url == "https://ov.example.com"


@pytest.mark.parametrize("mode, warned", [(0o600, False), (0o400, False), (0o644, True), (0o640, True)])
def test_mode_wider_than_0600_warns(tmp_path, mode, warned):
    path = write(tmp_path, installation(), mode=mode)
    _, warnings = load_passwords(path)
    assert bool(warnings) == warned
    if warned:
        assert path in warnings[0] and "%04o" % mode in warnings[0] and "chmod 600" in warnings[0]


def test_repr_and_str_hide_secrets():
    inst = Installation(url="https://x", user_name="u", password=PASSWORD,
                        access_key=ACCESS, secret_key=SECRET)
    for text in (repr(inst), str(inst), "%s" % (inst,)):
        assert "https://x" in text
        for secret in SECRETS:
            assert secret not in text


def test_installation_is_frozen(tmp_path):
    inst, _ = load_passwords(write(tmp_path, installation()))
    with pytest.raises(Exception):
        inst.url = "https://other"


# ---------------------------------------------------------------- Integration.json

FULL_ENTRY = {"IntegrationName": "Daily Import", "ExecutablePath": "python3 import.py --rows 5",
              "ExecutableWorkingDir": "/opt/jobs", "Timeout": 120,
              "Environment": {"TARGET": "sftp.example.org", "PORT": 22}, "Shell": True}


def test_good_integrations_with_all_keys_and_defaults(tmp_path):
    minimal = {"IntegrationName": "Export", "ExecutablePath": "sh export.sh"}
    entries = load_integrations(write(tmp_path, json.dumps([FULL_ENTRY, minimal]), "Integration.json"))
    assert entries[0] == IntegrationEntry("Daily Import", "python3 import.py --rows 5", "/opt/jobs",
                                          120.0, {"TARGET": "sftp.example.org", "PORT": "22"}, True)
    assert entries[1] == IntegrationEntry("Export", "sh export.sh")
    assert entries[1].working_dir is None and entries[1].timeout is None
    assert dict(entries[1].environment) == {} and entries[1].shell is False
    with pytest.raises(TypeError):
        entries[0].environment["X"] = "y"  # read-only, like the rest of the entry


def test_upload_dirs_are_kept_as_written(tmp_path):
    data = [entry(UploadDirs=["out", "/var/exports"]), entry(IntegrationName="B", UploadDirs=[]),
                    entry(IntegrationName="C")]
    first, second, third = load_integrations(write(tmp_path, json.dumps(data), "Integration.json"))
    assert first.upload_dirs == ("out", "/var/exports")
    assert second.upload_dirs == ()      # nothing printed is uploaded
    assert third.upload_dirs is None     # the default: working directory and temp folder


def test_the_example_file_loads():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entries = load_integrations(os.path.join(root, "Integration.example.json"))
    assert [e.name for e in entries] == ["Example Daily Import", "Example Nightly Export"]


def entry(**keys):
    item = {"IntegrationName": "Job", "ExecutablePath": "run.sh"}
    item.update(keys)
    return {k: v for k, v in item.items() if v is not DROP}


BAD_INTEGRATIONS = [
    ("empty-list", [], ["list is empty"]),
    ("object", {"IntegrationName": "Job"}, ["wrap the object in [ ]"]),
    ("scalar", "run.sh", ["expected a JSON list", "got string"]),
    ("entry-type", [entry(), 5], ["entry #2", "expected an object, got number"]),
    ("unknown-key", [entry(ExecutableWorkDir="/tmp")],
     ['entry #1 ("Job")', 'unknown key "ExecutableWorkDir"', 'did you mean "ExecutableWorkingDir"']),
    ("no-name", [entry(), entry(IntegrationName=DROP)], ["entry #2", 'missing "IntegrationName"']),
    ("no-path", [entry(ExecutablePath=DROP)], ['entry #1 ("Job")', 'missing "ExecutablePath"']),
    ("name-type", [entry(IntegrationName=7)], ["entry #1", "IntegrationName: expected a string, got number"]),
    ("path-type", [entry(ExecutablePath=["run.sh"])], ["ExecutablePath: expected a string, got array"]),
    ("path-empty", [entry(ExecutablePath="")], ["ExecutablePath: must not be empty"]),
    ("dir-type", [entry(ExecutableWorkingDir=1)], ["ExecutableWorkingDir: expected a string"]),
    ("timeout-negative", [entry(Timeout=-5)], ["Timeout: expected a number of seconds greater than 0, got -5"]),
    ("timeout-zero", [entry(Timeout=0)], ["Timeout"]),
    ("timeout-string", [entry(Timeout="30")], ['Timeout: expected a number', 'got "30"']),
    ("timeout-bool", [entry(Timeout=True)], ["Timeout"]),
    ("env-type", [entry(Environment=["A=1"])], ["Environment: expected an object", "got array"]),
    ("env-value", [entry(Environment={"A": True})], ["Environment.A: expected a string, got boolean"]),
    ("env-null", [entry(Environment={"A": None})], ["Environment.A: expected a string, got null"]),
    ("env-name", [entry(Environment={"A=B": "1"})], ['Environment: "A=B" is not a valid variable name']),
    ("shell-type", [entry(Shell="yes")], ["Shell: expected true or false, got string"]),
    ("duplicate-name", [entry(), entry()], ['entries #1 and #2 both have IntegrationName "Job"']),
    ("upload-dirs-string", [entry(UploadDirs="/tmp")],
     ['entry #1 ("Job").UploadDirs: expected a list of folders', "got string"]),
    ("upload-dirs-item", [entry(UploadDirs=["out", 5])], ["UploadDirs: item 2: expected a string, got number"]),
    ("upload-dirs-empty", [entry(UploadDirs=["out", " "])], ["UploadDirs: item 2: must not be empty"]),
    ("upload-dirs-nul", [entry(UploadDirs=["a\0b"])], ["UploadDirs: item 1: must not contain a NUL"]),
]


@pytest.mark.parametrize("data, parts", [row[1:] for row in BAD_INTEGRATIONS],
                         ids=[row[0] for row in BAD_INTEGRATIONS])
def test_bad_integrations_name_the_entry_and_key(tmp_path, data, parts):
    path = write(tmp_path, json.dumps(data), "Integration.json")
    with pytest.raises(UsageError) as caught:
        load_integrations(path)
    assert caught.value.message.startswith(path)
    for part in parts:
        assert part in caught.value.message


def test_integration_json_error_gives_line_column_and_reason(tmp_path):
    text = '[\n  {"IntegrationName": "Job",}\n]'
    # The reason is the json module's own words, which change between Python versions
    # ("Expecting property name enclosed in double quotes" before 3.13, "Illegal trailing
    # comma before end of object" since): compare with what this Python says.
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(text)
    reason = parsed.value.msg
    path = write(tmp_path, text, "Integration.json")
    with pytest.raises(UsageError) as caught:
        load_integrations(path)
    assert re.search(r"line 2, column \d+: " + re.escape(reason), caught.value.message)


def test_timeout_nan_and_infinity_are_refused(tmp_path):
    for text in ('[{"IntegrationName": "J", "ExecutablePath": "x", "Timeout": NaN}]',
                 '[{"IntegrationName": "J", "ExecutablePath": "x", "Timeout": Infinity}]'):
        with pytest.raises(UsageError, match="Timeout"):
            load_integrations(write(tmp_path, text, "Integration.json"))


# ---------------------------------------------------------------- Schema.json

def test_no_schema_file_means_defaults():
    assert load_schema(None) is DEFAULT_SCHEMA
    assert DEFAULT_SCHEMA.run.status == "IR_STATUS"
    assert DEFAULT_SCHEMA.run.running == vocabulary.RUNNING


def test_partial_schema_is_merged_with_defaults(tmp_path):
    path = write(tmp_path, json.dumps({"run": {"status": "X_STATUS", "ok": "Done"},
                                       "log": {"trackor_type": "Logs"}}), "Schema.json")
    schema = load_schema(path)
    assert (schema.run.status, schema.run.ok, schema.run.start) == ("X_STATUS", "Done", "IR_START")
    assert schema.log.trackor_type == "Logs" and schema.log.message == "IL_MESSAGE"
    assert schema.integration == DEFAULT_SCHEMA.integration


BAD_SCHEMAS = [
    ("list", [], ["expected a JSON object", "got array"]),
    ("unknown-section", {"runs": {}}, ['unknown section "runs"', 'did you mean "run"']),
    ("unknown-key", {"log": {"mesage": "M"}}, ['log: unknown key "mesage"', 'did you mean "message"']),
    ("section-type", {"run": "IR"}, ["run: expected an object, got string"]),
    ("value-type", {"run": {"status": 1}}, ["run.status: expected a string, got number"]),
    ("value-empty", {"integration": {"name": ""}}, ["integration.name: must not be empty"]),
    ("same-field", {"run": {"start": "IR_FINISH"}}, ["start and finish", '"IR_FINISH"']),
    ("same-value", {"log": {"warning": "Error"}}, ["warning and error", "drop-down value"]),
]


@pytest.mark.parametrize("data, parts", [row[1:] for row in BAD_SCHEMAS], ids=[row[0] for row in BAD_SCHEMAS])
def test_bad_schema_names_the_key(tmp_path, data, parts):
    path = write(tmp_path, json.dumps(data), "Schema.json")
    with pytest.raises(UsageError) as caught:
        load_schema(path)
    assert caught.value.message.startswith(path)
    for part in parts:
        assert part in caught.value.message


def test_missing_schema_file(tmp_path):
    with pytest.raises(UsageError, match="Schema.json: no such file"):
        load_schema(str(tmp_path / "Schema.json"))


@pytest.mark.parametrize("field, section, expected", [
    ("IR_STATUS", None, "run.status (IR_STATUS)"),
    ("IntegrationRun", None, "run.trackor_type (IntegrationRun)"),
    ("INT_ENABLED", None, "integration.enabled (INT_ENABLED)"),
    ("Error", "log", "log.error (Error)"),
    ("TRACKOR_KEY", None, "TRACKOR_KEY"),
])
def test_describe_names_the_schema_entry(field, section, expected):
    assert DEFAULT_SCHEMA.describe(field, section) == expected


def test_describe_a_shared_field_name(tmp_path):
    schema = load_schema(write(tmp_path, '{"run": {"file": "FILE"}, "log": {"file": "FILE"}}', "S.json"))
    assert schema.describe("FILE") == "run.file or log.file (FILE)"
    assert schema.describe("FILE", "log") == "log.file (FILE)"


def test_type_value_maps_message_types():
    log = config.LogSchema(info="Informational")
    assert [log.type_value(t) for t in vocabulary.MESSAGE_TYPES] == ["Informational", "Warning", "Error"]
    with pytest.raises(ValueError):
        log.type_value("Debug")


def test_default_schema_json_round_trips(tmp_path):
    text = config.default_schema_json()
    assert json.loads(text)["run"]["status"] == "IR_STATUS"
    assert load_schema(write(tmp_path, text, "Schema.json")) == DEFAULT_SCHEMA
