"""Faults on demand, request counters, and many concurrent writers."""

import threading
import time

import pytest
import requests

import sandbox as sandbox_pkg

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


def integrations(sandbox, **kwargs):
    return requests.get(sandbox.url + "/api/v3/trackor_types/Integration/trackors", auth=AUTH, **kwargs)


def create_integration(sandbox, key):
    return requests.post(sandbox.url + "/api/v3/trackor_types/Integration/trackors", auth=AUTH,
                         json={"fields": {"TRACKOR_KEY": key, "INT_NAME": key}})


def test_latency_is_applied(sandbox):
    sandbox.set_faults(latency_ms=150)
    started = time.perf_counter()
    assert integrations(sandbox).status_code == 200
    assert time.perf_counter() - started >= 0.15


@pytest.mark.parametrize("status", [500, 503])
def test_error_rate_one_answers_every_request_with_the_error_status(sandbox, status):
    requests.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 1.0, "error_status": status})
    answers = [integrations(sandbox) for _ in range(5)]
    assert {a.status_code for a in answers} == {status}
    assert answers[0].headers["Content-Type"].startswith("text/plain")
    assert create_integration(sandbox, "X").status_code == status
    assert sandbox.trackors("Integration")[-1]["TRACKOR_KEY"] == "INT-2"  # nothing was processed


def test_faults_never_touch_the_control_api_and_clear(sandbox):
    sandbox.set_faults(error_rate=1.0, drop_rate=1.0)
    assert requests.get(sandbox.url + "/_sandbox/faults").json()["drop_rate"] == 1.0
    assert requests.delete(sandbox.url + "/_sandbox/faults").status_code == 200
    assert integrations(sandbox).status_code == 200


def test_bad_fault_setting_is_400(sandbox):
    assert requests.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 2}).status_code == 400
    assert requests.post(sandbox.url + "/_sandbox/faults", json={"nope": 1}).status_code == 400


def test_drop_closes_the_connection_without_an_answer(sandbox):
    sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        create_integration(sandbox, "X")
    assert [r["TRACKOR_KEY"] for r in sandbox.trackors("Integration")] == ["INT-1", "INT-2"]


def test_drop_after_commit_keeps_the_write_the_client_never_saw(sandbox):
    sandbox.set_faults(drop_rate=1.0, drop_after_commit=True)
    with pytest.raises(requests.ConnectionError):
        create_integration(sandbox, "X")
    sandbox.clear_faults()
    assert "X" in [r["TRACKOR_KEY"] for r in sandbox.trackors("Integration")]
    assert create_integration(sandbox, "X").status_code == 400  # the retry meets the duplicate


def test_seeded_drop_rate_is_deterministic(sandbox):
    def outcomes():
        sandbox.set_faults(drop_rate=0.5, seed=7)
        result = []
        for _ in range(12):
            try:
                result.append(integrations(sandbox).status_code)
            except requests.ConnectionError:
                result.append("dropped")
        return result
    first = outcomes()
    assert first == outcomes() and "dropped" in first and 200 in first


def test_down_for_a_while_then_recovers(sandbox):
    requests.post(sandbox.url + "/_sandbox/faults", json={"down_for_s": 0.3})
    with pytest.raises(requests.ConnectionError):
        integrations(sandbox)
    time.sleep(0.35)
    assert integrations(sandbox).status_code == 200


def test_stats_count_requests_by_kind(sandbox):
    requests.delete(sandbox.url + "/_sandbox/stats")
    integrations(sandbox)
    create_integration(sandbox, "X")
    requests.get(sandbox.url + "/api/v3/trackor_types/Integration/trackors")  # no auth
    sandbox.set_faults(error_rate=1.0)
    integrations(sandbox)
    stats = requests.get(sandbox.url + "/_sandbox/stats").json()
    assert stats["read"] == 1 and stats["create"] == 1 and stats["auth_failed"] == 1
    assert stats["faulted"] == 1 and stats["total"] == 4
    assert sandbox.stats() == stats


def test_twenty_concurrent_writers(sandbox):
    body = {"fields": {"TRACKOR_KEY": "RUN-1", "IR_STATUS": "Running"},
            "parents": [{"trackor_type": "Integration", "filter": {"TRACKOR_KEY": "INT-1"}}]}
    requests.post(sandbox.url + "/api/v3/trackor_types/IntegrationRun/trackors", json=body, auth=AUTH)
    failures = []

    def writer(number):
        with requests.Session() as session:
            session.auth = AUTH
            for seq in range(50):
                answer = session.post(
                    sandbox.url + "/api/v3/trackor_types/IntegrationLog/trackors",
                    json={"fields": {"TRACKOR_KEY": "W%02d-%06d" % (number, seq), "IL_MESSAGE_TYPE": "Info",
                                     "IL_MESSAGE": "line %d" % seq, "IL_DESCRIPTION": "d" * 2000},
                          "parents": [{"trackor_type": "IntegrationRun", "filter": {"TRACKOR_KEY": "RUN-1"}}]})
                if answer.status_code != 201:
                    failures.append(answer.text)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    rows = sandbox.trackors("IntegrationLog")
    assert len(rows) == 1000
    assert len({r["TRACKOR_ID"] for r in rows}) == 1000 and len({r["TRACKOR_KEY"] for r in rows}) == 1000
    assert all(r["_parent_key"] == "RUN-1" for r in rows)
