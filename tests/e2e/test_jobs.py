"""Jobs (issue 14) end to end with the `indexed` engine, as a user runs
them: the real legiond, real sandboxes, `legion submit` and `legion job`
(docs/jobs.md). An indexed job of 8 completions 3 at a time with one index
failing once and retried; an index failing every attempt
(BackoffLimitExceeded, the running indexes deleted); a job larger than the
node refused with a clear 422 and no record (bad specs: test_jobs_api.py);
`job list/show --json`; stop while running and the attached client
interrupted; delete removes the record and the logs. After every test no
sandbox of a job is left (state dir, cgroup, process, mount: jobs_kit.sweep)."""
import json
import os
import signal

import pytest

import jobs_kit as jk
from jobs_kit import cli, get_job, roles

WORK = r'''#!/bin/sh
# One index of an indexed job: its start and end recorded with the host's
# clock, index 5 failing its first attempt (exit 3).
echo "start $LEGION_JOB_INDEX $LEGION_JOB_ATTEMPT $(date +%s.%N) completion=$JOB_COMPLETION_INDEX role=$LEGION_ROLE job=$LEGION_JOB_NAME ns=$LEGION_JOB_NAMESPACE"
sleep 2
if [ "$LEGION_JOB_INDEX" = 5 ] && [ "$LEGION_JOB_ATTEMPT" = 0 ]; then
        echo "fail $LEGION_JOB_INDEX $(date +%s.%N)"
        exit 3
fi
echo "end $LEGION_JOB_INDEX $(date +%s.%N)"
'''

ALWAYS_FAILS = r'''#!/bin/sh
echo "index $LEGION_JOB_INDEX attempt $LEGION_JOB_ATTEMPT"
case "$LEGION_JOB_INDEX" in
0) exit 3 ;;
1) exec sleep 3600 ;;
esac
'''


@pytest.fixture(scope="module")
def env():
    yield from jk.env_fixture("lg-jobs-")


@pytest.fixture()
def d(env):
    yield env
    jk.sweep(env)


def max_overlap(intervals):
    """Most intervals [start, end] open at one instant (an end before a
    start at the same instant)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda t: (t[0], t[1]))
    n = best = 0
    for _, delta in events:
        n += delta
        best = max(best, n)
    return best


def test_indexed_eight_three_at_a_time_one_retried(d):
    files = jk.write_files(d.top, {"work.sh": WORK})
    rc, out, err = cli(d, "submit", "--engine", "indexed", "--name", "idx", "--completions", "8",
                       "--parallelism", "3", "--files", "work.sh", "--", "sh", "/job/work.sh", cwd=files, check=None)
    j = jk.wait_job(d, "idx")
    assert rc == 0, (rc, out, err, j["status"])
    st = j["status"]
    assert st["phase"] == "Succeeded" and st.get("reason") == "Completed", st
    assert st["indexed"]["completions"] == 8 and st["indexed"]["succeeded"] == 8, st["indexed"]
    assert st["indexed"]["failed"] == 1 and st["indexed"]["active"] == 0, st["indexed"]
    spec = j["spec"]
    assert spec["engine"] == "indexed" and spec["completions"] == 8 and spec["parallelism"] == 3, spec

    intervals = []
    for i in range(8):
        text = jk.log(d, "idx", "index", i)
        starts = [ln.split() for ln in text.splitlines() if ln.startswith("start ")]
        ends = [ln.split() for ln in text.splitlines() if ln.startswith(("end ", "fail "))]
        want_attempts = 2 if i == 5 else 1
        assert len(starts) == want_attempts and len(ends) == want_attempts, (i, text)
        for k, (s, e) in enumerate(zip(starts, ends)):
            assert s[1] == str(i) and s[2] == str(k), (i, k, s)
            assert f"completion={i}" in s and "role=index" in s and "job=idx" in s and "ns=default" in s, s
            intervals.append((float(s[3]), float(e[2])))
        if i == 5:
            # The retry appends to the same log after a marker line.
            assert "--- attempt 1 ---" in text, text
            assert text.index("fail 5") < text.index("--- attempt 1 ---") < text.rindex("start 5 1"), text
    # Never more than 3 at once, by the times the indexes recorded
    # themselves (inside their sandboxes, so within their lifetimes)...
    assert max_overlap(intervals) <= 3, sorted(intervals)
    # ...and by the role records.
    rs = [r for r in roles(j, "index") if r.get("startedAt")]
    assert {r["index"] for r in rs} == set(range(8)), rs
    assert max_overlap([(jk.ts(r["startedAt"]), jk.ts(r["finishedAt"])) for r in rs]) <= 3, rs
    jk.check_usage(j)
    jk.assert_job_gone(d, j)


def test_an_index_failing_every_attempt_fails_the_job(d):
    files = jk.write_files(d.top, {"fail.sh": ALWAYS_FAILS})
    cli(d, "submit", "--engine", "indexed", "--name", "bol", "--completions", "4", "--parallelism", "2",
        "--retries", "1", "--detach", "--files", "fail.sh", "--", "sh", "/job/fail.sh", cwd=files)
    j = jk.wait_job(d, "bol")
    st = j["status"]
    assert st["phase"] == "Failed" and st["reason"] == "BackoffLimitExceeded", st
    assert "index 0 failed 2 times" in st["message"] and "Exited(3)" in st["message"], st["message"]
    # Index 1 was still sleeping: deleted with the job.
    one = [r for r in roles(j, "index") if r["index"] == 1]
    assert one and all(r["state"] in ("Exited", "Deleted") for r in one), one
    text = jk.log(d, "bol", "index", 0)
    assert "index 0 attempt 0" in text and "index 0 attempt 1" in text and "--- attempt 1 ---" in text, text
    _, out, _ = cli(d, "job", "show", "bol")
    assert "BackoffLimitExceeded" in out, out
    jk.check_usage(j)
    jk.assert_job_gone(d, j)


def test_a_job_larger_than_the_node_is_refused(d):
    # 3 indexes at once of 4 vCPU: 12 vCPU, the node gives jobs 8 (jobs_kit.start).
    rc, out, err = cli(d, "submit", "--engine", "indexed", "--name", "big", "--completions", "3",
                       "--parallelism", "3", "--executor-cores", "4", "--detach", "--", "true", check=None)
    assert rc != 0, (out, err)
    assert "12 vCPU" in err and "8 vCPU" in err and "--job-cpu" in err, err
    spec = {"name": "big2", "engine": "indexed", "command": ["true"], "completions": 2, "parallelism": 2,
            "executors": {"cpu": "1", "memory": "20Gi"}}
    st, body = d.http("POST", "/v1/namespaces/default/jobs", spec)
    assert st == 422, (st, body)
    msg = json.loads(body)["error"]["message"]
    assert "40 GiB" in msg and "12 GiB" in msg and "--job-memory" in msg, msg
    # Refused means nothing kept.
    assert get_job(d, "big", missing_ok=True) is None and get_job(d, "big2", missing_ok=True) is None
    assert not {"big", "big2"} & {j["name"] for j in jk.list_jobs(d)}


def test_list_show_json_and_delete(d):
    cli(d, "submit", "--engine", "indexed", "--name", "ls1", "--completions", "2", "--detach",
        "--", "sh", "-c", "echo hello from $LEGION_JOB_INDEX")
    j = jk.wait_job(d, "ls1")
    assert j["status"]["phase"] == "Succeeded", j["status"]
    _, out, _ = cli(d, "job", "list", "--json")
    doc = json.loads(out)
    items = doc["items"] if isinstance(doc, dict) else doc
    mine = [x for x in items if x["name"] == "ls1"]
    assert len(mine) == 1 and mine[0]["status"]["phase"] == "Succeeded", items
    _, out, _ = cli(d, "job", "show", "ls1", "--json")
    shown = json.loads(out)
    assert shown["uid"] == j["uid"] and shown["status"]["phase"] == "Succeeded" and shown["namespace"] == "default"
    _, out, _ = cli(d, "job", "list")
    assert "ls1" in out and "Succeeded" in out, out
    _, out, _ = cli(d, "job", "show", "ls1")
    assert "Succeeded" in out and "Completed" in out, out
    assert jk.log(d, "ls1", "index", 1).strip() == "hello from 1"
    logs = os.path.join(d.home, "jobs", "default", "ls1")
    assert os.path.isfile(os.path.join(logs, "index-0.log")), os.listdir(logs)
    jk.assert_job_gone(d, j)

    cli(d, "job", "delete", "ls1")
    assert get_job(d, "ls1", missing_ok=True) is None
    assert not os.path.exists(logs), os.listdir(logs)
    rc, out, err = cli(d, "job", "logs", "ls1", "--role", "index", "--index", "0", check=None)
    assert rc != 0 and "ls1" in err, (rc, out, err)
    assert "ls1" not in [x["name"] for x in jk.list_jobs(d)]


def test_stop_while_running_and_an_interrupted_submit(d):
    cli(d, "submit", "--engine", "indexed", "--name", "sleepy", "--completions", "2", "--detach",
        "--", "sleep", "3600")
    j = jk.running(d, "sleepy")
    assert j["status"]["phase"] == "Running", j["status"]
    jk.wait_job(d, "sleepy", lambda j: any(r["state"] == "Running" for r in roles(j, "index")), "an index running")
    cli(d, "job", "stop", "sleepy")
    j = jk.wait_job(d, "sleepy")
    st = j["status"]
    assert st["phase"] == "Stopped" and st["reason"] == "Stopped" and st["message"] == "stopped by the user", st
    jk.assert_job_gone(d, j)
    jk.check_usage(j)

    # An attached submit interrupted (^C): the job is stopped.
    p = jk.popen(d, "submit", "--engine", "indexed", "--name", "intr", "--completions", "1", "--", "sleep", "3600")
    try:
        jk.wait_job(d, "intr", lambda j: any(r["state"] == "Running" for r in roles(j, "index")),
                    "the index running")
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    j = jk.wait_job(d, "intr")
    assert j["status"]["phase"] == "Stopped" and j["status"]["reason"] == "Stopped", j["status"]
    jk.assert_job_gone(d, j)
