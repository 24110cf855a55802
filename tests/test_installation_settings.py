"""What differs between installations (SPEC §2 Timezone, §4 limits): the mapping's field lengths,
the installation's own time zone, field names in any case."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from dateutil import tz

from tests.hubtest import fixture_command


def test_a_message_limit_of_100_cuts_a_300_character_line_at_100_with_an_ellipsis(hub, tmp_path):
    hub.sandbox.set_schema(field_lengths={"IL_MESSAGE": 100})      # longer values are refused there
    schema = tmp_path / "Schema.json"
    schema.write_text(json.dumps({"log": {"message_limit": 100}}))
    key = hub.add_integration("Short messages")
    line = "w" * 300
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Short messages",
                                              "ExecutablePath": fixture_command("says.py", "out:" + line)}),
                       "-s", str(schema))
    assert code == 0
    [record] = hub.logs(hub.runs(key)[0]["TRACKOR_KEY"])
    assert record["IL_MESSAGE"] == "w" * 99 + "\u2026" and len(record["IL_MESSAGE"]) == 100
    assert record["IL_DESCRIPTION"] == line


def test_a_description_limit_splits_long_lines_at_it(hub, tmp_path):
    schema = tmp_path / "Schema.json"
    schema.write_text(json.dumps({"log": {"description_limit": 1000}}))
    key = hub.add_integration("Short descriptions")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Short descriptions",
                                              "ExecutablePath": fixture_command("says.py", "out:" + "d" * 2500)}),
                       "-s", str(schema))
    assert code == 0
    records = hub.logs(hub.runs(key)[0]["TRACKOR_KEY"])
    assert [len(r["IL_DESCRIPTION"]) for r in records] == [1000, 1000, 500]
    assert [r["IL_MESSAGE"].split(")")[0] for r in records] == ["(part 1/3", "(part 2/3", "(part 3/3"]


def test_without_timezone_date_times_are_written_in_the_installations_primary_timezone(hub):
    zone = "Asia/Kolkata"                                   # +05:30: never the machine's zone here by chance
    assert datetime.now(tz.tzlocal()).utcoffset() != timedelta(hours=5, minutes=30)
    hub.sandbox.set_schema(timezone=zone)
    key = hub.add_integration("Zoned")
    before = datetime.now(timezone.utc)
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Zoned",
                                              "ExecutablePath": fixture_command("says.py", "out:hi")})) == 0
    [run] = hub.runs(key)
    start = datetime.strptime(run["IR_START"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz.gettz(zone))
    assert abs((start - before).total_seconds()) < 60        # read in Kolkata, it is now
    [record] = hub.logs(run["TRACKOR_KEY"])
    assert record["IL_DATE_TIME"][:13] == run["IR_START"][:13]
    # Asked once, remembered in the log folder for a day.
    with open(os.path.join(hub.log_dir, "timezone.json")) as cached:
        assert list(json.load(cached).values())[0]["zone"] == zone


def test_a_timezone_in_passwords_json_wins_over_the_installations(hub, tmp_path):
    from tests.conftest import write_passwords
    hub.sandbox.set_schema(timezone="Asia/Kolkata")
    hub.passwords = write_passwords(tmp_path, hub.sandbox.url, Timezone="America/Los_Angeles")
    key = hub.add_integration("Pacific")
    before = datetime.now(timezone.utc)
    assert hub.wrapper(hub.integrations_file({"IntegrationName": "Pacific", "ExecutablePath": "true"})) == 0
    start = datetime.strptime(hub.runs(key)[0]["IR_START"], "%Y-%m-%dT%H:%M:%S")
    assert abs((start.replace(tzinfo=tz.gettz("America/Los_Angeles")) - before).total_seconds()) < 60


def test_field_names_in_lower_case_are_matched_in_onevizions_answers(hub, tmp_path):
    schema = tmp_path / "Schema.json"
    schema.write_text(json.dumps({"integration": {"name": "int_name", "enabled": "int_enabled",
                                                  "read_from_stdout": "int_read_from_stdout"}}))
    key = hub.add_integration("Lower case")
    code = hub.wrapper(hub.integrations_file({"IntegrationName": "Lower case",
                                              "ExecutablePath": fixture_command("says.py", "out:seen")}),
                       "-s", str(schema))
    assert code == 0                                           # not skipped as disabled
    [run] = hub.runs(key)
    assert [r["IL_MESSAGE"] for r in hub.logs(run["TRACKOR_KEY"])] == ["seen"]   # Read From STDOUT read too
