"""The official `onevizion` client, unchanged, works against the sandbox (Basic and token auth)."""

import onevizion
import pytest

import sandbox as sandbox_pkg


def trackor(sandbox, trackor_type, token=False):
    if token:
        return onevizion.Trackor(trackorType=trackor_type, URL=sandbox.url, userName=sandbox_pkg.ACCESS_KEY,
                                 password=sandbox_pkg.SECRET_KEY, isTokenAuth=True)
    return onevizion.Trackor(trackorType=trackor_type, URL=sandbox.url, userName=sandbox_pkg.USER_NAME,
                             password=sandbox_pkg.PASSWORD)


@pytest.mark.parametrize("token", [False, True])
def test_official_client_round_trip(sandbox, tmp_path, monkeypatch, token):
    monkeypatch.chdir(tmp_path)  # GetFile writes into the working directory
    runs = trackor(sandbox, "IntegrationRun", token)
    runs.create(fields={"TRACKOR_KEY": "RUN 1", "IR_STATUS": "Running", "IR_START": "2024-05-01T10:00:00"},
                parents={"Integration": {"TRACKOR_KEY": "INT-1"}})
    assert runs.errors == [] and runs.request.status_code == 201
    run_id = runs.jsonData["TRACKOR_ID"]

    runs.read(filters={"TRACKOR_KEY": '"RUN 1"', "Integration.INT_NAME": '"Example Daily Import"'},
              fields=["IR_STATUS", "IR_START", "Integration.TRACKOR_KEY"])
    assert runs.errors == []
    assert runs.jsonData == [{"TRACKOR_ID": run_id, "TRACKOR_KEY": "RUN 1", "IR_STATUS": "Running",
                              "IR_START": "2024-05-01T10:00:00", "Integration.TRACKOR_KEY": "INT-1"}]

    runs.update(trackorId=run_id, fields={"IR_STATUS": "Executed without Warnings"})
    assert runs.errors == []
    runs.update(filters={"TRACKOR_KEY": '"RUN 1"'}, fields={"IR_FINISH": "2024-05-01T10:01:00"})
    assert runs.errors == []
    runs.read(trackorId=run_id, fields=["IR_STATUS", "IR_FINISH"])
    assert runs.jsonData["IR_STATUS"] == "Executed without Warnings"
    assert runs.jsonData["IR_FINISH"] == "2024-05-01T10:01:00"

    (tmp_path / "report.csv").write_bytes(b"a,b\n1,2\n")
    runs.UploadFile(trackorId=run_id, fieldName="IR_FILE", fileName=str(tmp_path / "report.csv"))
    assert runs.errors == [] and isinstance(runs.jsonData, int)
    (tmp_path / "report.csv").unlink()
    downloaded = runs.GetFile(trackorId=run_id, fieldName="IR_FILE")
    assert runs.errors == [] and downloaded == "report.csv"
    assert (tmp_path / "report.csv").read_bytes() == b"a,b\n1,2\n"

    runs.delete(trackorId=run_id)
    assert runs.errors == []
    assert sandbox.trackors("IntegrationRun") == []


def test_official_client_reports_errors(sandbox):
    runs = trackor(sandbox, "IntegrationRun")
    runs.create(fields={"IR_STATUS": "Bogus"}, parents={"Integration": {"TRACKOR_KEY": "INT-1"}})
    assert runs.errors and runs.errors[0][0].startswith("400 = ")
    assert "IR_STATUS" in runs.errors[0][0]
    bad = onevizion.Trackor(trackorType="Integration", URL=sandbox.url, userName="x", password="y")
    bad.read(filters={"INT_ENABLED": 1}, fields=["INT_NAME"])
    assert bad.errors and bad.errors[0][0].startswith("401 = ")
