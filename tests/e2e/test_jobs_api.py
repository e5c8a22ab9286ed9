"""The jobs API's layer end to end (src/api/api-jobs.c, docs/api.md "Jobs"):
malformed and hostile submits, names and parameters answered with a clear
4xx and nothing stored; namespaces kept apart (404 across them), admin-only
calls (403); the attach stream (NDJSON status lines, the client closing it
stops the job "client disconnected"); the error mapping of lg_jobs (422
spec and capacity, 409 name taken, 503 dask without the node network).
The jobs' functional tests (engines, lifecycle, Dask) are test_jobs.py and
test_jobs_dask.py."""
import http.client
import json
import os
import time

import pytest

from test_legiond import kill_legiond, start_legiond
from test_security import ns_token

SLEEPER = {"engine": "indexed", "command": ["sh", "-c", "sleep 60"], "completions": 1,
           "executors": {"count": 1, "cpu": "0.1", "memory": "64Mi"}}


@pytest.fixture(scope="module")
def d(legion_bin, tmp_path_factory):
    d = start_legiond(tmp_path_factory.mktemp("jobs-api"), args=["--job-cpu", "2", "--job-memory", "2g",
                                                                "--job-warm", "0"])
    yield d
    kill_legiond(d)


def jobs(d, ns="default"):
    st, body = d.http("GET", f"/v1/namespaces/{ns}/jobs")
    assert st == 200, body
    return json.loads(body)["items"]


def message(body):
    return json.loads(body)["error"]["message"]


def submit(d, spec, ns="default", token=None):
    return d.http("POST", f"/v1/namespaces/{ns}/jobs", body=spec, token=token)


def wait_phase(d, name, phases, ns="default", timeout=60):
    def done():
        st, body = d.http("GET", f"/v1/namespaces/{ns}/jobs/{name}")
        assert st == 200, body
        job = json.loads(body)
        return job if job["status"].get("phase") in phases else None
    return d.wait_for(done, timeout=timeout, what=f"job {name} in {phases}")


def test_malformed_bodies_are_400_and_store_nothing(d):
    for body in (b"", b"{", b"[1, 2]", b'"x"', b"\xff\xfe", b'{"name": "a", "name": "b"}'):
        st, resp = submit(d, body)
        assert st == 400, (body, st, resp)
        assert message(resp)
    # A body over the API's limit is refused before it is read whole.
    st, _ = submit(d, b"{" + b" " * (9 << 20) + b"}")
    assert st == 413
    assert jobs(d) == []


@pytest.mark.parametrize("spec, names", [
    ({"bogus": 1}, "bogus"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executor": {"count": 1}}, "executor"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": 1, "gpus": 1}}, "gpus"),
    ({"name": "x", "engine": "spark"}, "spark"),
    ({"name": "x", "engine": "indexed"}, "command"),
    ({"name": "x", "engine": "indexed", "command": "true"}, "command"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": 100000}}, "count"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": -1}}, "count"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": 1e300}}, "count"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": "2"}}, "count"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "completions": 10 ** 12}, "completions"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": 1, "cpu": "lots"}}, "lots"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "executors": {"count": 1, "memory": "-1Gi"}}, "-1Gi"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "maxDurationSeconds": -5}, "maxDurationSeconds"),
    ({"name": "Bad_Name", "engine": "indexed", "command": ["true"]}, "Bad_Name"),
    ({"name": "a" * 54, "engine": "indexed", "command": ["true"]}, "name"),
    ({"name": "../etc", "engine": "indexed", "command": ["true"]}, "name"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "env": {"A": 1}}, "env"),
    ({"name": "x", "engine": "indexed", "command": ["true"], "package": "sha256:zz"}, "package"),
])
def test_bad_specs_are_422_naming_the_field(d, spec, names):
    st, body = submit(d, spec)
    assert st == 422, (spec, st, body)
    assert names in message(body), (spec, message(body))
    assert jobs(d) == []
    assert os.listdir(os.path.join(d.home, "jobs")) in ([], ["default"])
    if os.path.isdir(os.path.join(d.home, "jobs", "default")):
        assert os.listdir(os.path.join(d.home, "jobs", "default")) == []


def test_more_than_the_node_gives_jobs_is_422(d):
    # --job-cpu 2: four executors of one vCPU can never run here.
    spec = dict(SLEEPER, name="big", executors={"count": 1, "cpu": "1", "memory": "64Mi"}, parallelism=4,
                completions=4)
    st, body = submit(d, spec)
    assert st == 422, body
    assert "--job-cpu" in message(body)
    assert jobs(d) == []


def test_unknown_package_and_image_are_404(d):
    st, body = submit(d, dict(SLEEPER, name="nopkg", package="sha256:" + "0" * 64))
    assert st == 404, body
    st, body = submit(d, dict(SLEEPER, name="noimg", image="no-such-image:1"))
    assert st == 404, body
    assert jobs(d) == []


def test_paths_names_and_parameters(d):
    h = d.http
    assert h("GET", "/v1/namespaces/default/jobs/nope")[0] == 404
    assert h("GET", "/v1/namespaces/default/jobs/" + "a" * 300)[0] == 404
    assert h("GET", "/v1/namespaces/default/jobs/%2e%2e")[0] == 404
    assert h("POST", "/v1/namespaces/default/jobs/nope/stop")[0] == 404
    assert h("DELETE", "/v1/namespaces/default/jobs/nope")[0] == 404
    assert h("GET", "/v1/namespaces/default/jobs/nope/logs")[0] == 404
    assert h("GET", "/v1/namespaces/nope/jobs")[0] == 404
    assert h("PUT", "/v1/namespaces/default/jobs")[0] == 405
    assert h("GET", "/v1/namespaces/default/jobs/x/stop")[0] in (404, 405)
    assert h("POST", "/v1/jobs")[0] == 405
    st, body = h("PUT", "/v1/jobs/pools/Bad_Name", body={"ready": 1})
    assert st in (400, 422), body
    st, body = h("PUT", "/v1/jobs/pools/p1", body={"ready": 100000})
    assert st == 422, body
    st, body = h("PUT", "/v1/jobs/pools/p1", body={"ready": 1, "bogus": 1})
    assert st == 422 and "bogus" in message(body), body
    assert h("DELETE", "/v1/jobs/pools/nope")[0] == 404
    # A job to read the logs of: role and index are checked.
    st, body = submit(d, dict(SLEEPER, name="logs"))
    assert st == 201, body
    for q, code in (("role=boss", 400), ("role=index&index=-1", 400), ("role=index&index=x", 400),
                    ("role=index&index=99999999999", 400), ("role=index&index=7", 404)):
        st, body = h("GET", f"/v1/namespaces/default/jobs/logs/logs?{q}")
        assert st == code, (q, st, body)
    # Without a role: an indexed job's is index (0, or the one given).
    st, body = h("GET", "/v1/namespaces/default/jobs/logs/logs?index=0")
    assert st in (200, 404), (st, body)
    assert b"driver" not in body, body
    st, body = h("DELETE", "/v1/namespaces/default/jobs/logs")
    assert st == 200, body
    assert jobs(d) == []


def test_master_calls(d):
    h = d.http
    assert h("GET", "/v1/namespaces/default/masters/nope")[0] == 404
    assert h("DELETE", "/v1/namespaces/default/masters/nope")[0] == 404
    assert h("GET", "/v1/namespaces/default/masters/" + "a" * 300)[0] == 404
    for body in ({"name": "m", "bogus": 1}, {"name": "Bad_Name"}, {"name": "m", "cpu": "lots"},
                 {"name": "m", "memory": "-1"}, {"name": "m", "engine": "spark"}, {"name": "m", "keepAliveSeconds": -1}):
        st, resp = h("POST", "/v1/namespaces/default/masters", body=body)
        assert st == 422, (body, st, resp)
    st, body = h("POST", "/v1/namespaces/default/masters", body=b"{")
    assert st == 400, body
    st, body = h("GET", "/v1/namespaces/default/masters")
    assert st == 200 and json.loads(body)["items"] == [], body


def test_name_taken_is_409(d):
    st, body = submit(d, dict(SLEEPER, name="twice"))
    assert st == 201, body
    st, body = submit(d, dict(SLEEPER, name="twice"))
    assert st == 409, body
    assert h_delete(d, "twice") == 200


def h_delete(d, name, ns="default"):
    return d.http("DELETE", f"/v1/namespaces/{ns}/jobs/{name}")[0]


def test_namespaces_are_kept_apart_and_admin_calls(d):
    tok = ns_token(d, "jobs-a")
    st, body = submit(d, dict(SLEEPER, name="mine"), ns="jobs-a", token=tok)
    assert st == 201, body
    st, body = submit(d, dict(SLEEPER, name="theirs"))
    assert st == 201, body
    # The default namespace is another's: 404, never 403.
    assert submit(d, dict(SLEEPER, name="x"), token=tok)[0] == 404
    assert d.http("GET", "/v1/namespaces/default/jobs/theirs", token=tok)[0] == 404
    assert d.http("POST", "/v1/namespaces/default/jobs/theirs/stop", token=tok)[0] == 404
    assert d.http("DELETE", "/v1/namespaces/default/jobs/theirs", token=tok)[0] == 404
    assert d.http("GET", "/v1/namespaces/default/jobs/theirs/logs", token=tok)[0] == 404
    st, body = d.http("GET", "/v1/namespaces/jobs-a/jobs", token=tok)
    assert st == 200 and [j["name"] for j in json.loads(body)["items"]] == ["mine"]
    # Every namespace and the pools: an admin's.
    for path in ("/v1/jobs", "/v1/masters", "/v1/jobs/pools"):
        assert d.http("GET", path, token=tok)[0] == 403, path
    assert d.http("PUT", "/v1/jobs/pools/p2", body={"ready": 0}, token=tok)[0] == 403
    st, body = d.http("GET", "/v1/jobs")
    assert st == 200
    assert sorted((j["namespace"], j["name"]) for j in json.loads(body)["items"]) == \
        [("default", "theirs"), ("jobs-a", "mine")]
    st, body = d.http("GET", "/v1/jobs/pools")
    assert st == 200 and isinstance(json.loads(body)["items"], list)
    st, body = d.http("GET", "/v1/masters")
    assert st == 200 and json.loads(body)["items"] == [], body
    assert d.http("DELETE", "/v1/namespaces/jobs-a/jobs/mine", token=tok)[0] == 200
    assert h_delete(d, "theirs") == 200


def test_stop_answers_the_job(d):
    st, body = submit(d, dict(SLEEPER, name="stopme"))
    assert st == 201, body
    st, body = d.http("POST", "/v1/namespaces/default/jobs/stopme/stop")
    assert st == 200, body
    assert json.loads(body)["name"] == "stopme"
    job = wait_phase(d, "stopme", ("Stopped",))
    assert job["status"]["reason"] == "Stopped"
    assert job["status"]["message"] == "stopped by the user"
    assert h_delete(d, "stopme") == 200


def attach(d, spec, ns="default"):
    """POST ?attach=true; returns the connection and response, status read."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    c.request("POST", f"/v1/namespaces/{ns}/jobs?attach=true", body=json.dumps(spec).encode(),
              headers={"Authorization": "Bearer " + d.token})
    return c, c.getresponse()


def test_attach_streams_status_and_ends_with_the_final_one(d):
    spec = dict(SLEEPER, name="quick", command=["sh", "-c", "exit 0"])
    c, r = attach(d, spec)
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.read().splitlines()]
    c.close()
    assert lines and all(x["type"] == "status" for x in lines), lines
    assert lines[0]["job"]["name"] == "quick"
    assert lines[-1]["job"]["status"]["phase"] == "Succeeded", lines[-1]
    assert h_delete(d, "quick") == 200


def test_attach_errors_are_plain_json(d):
    c, r = attach(d, {"name": "x", "bogus": 1})
    assert r.status == 422
    assert "bogus" in message(r.read())
    c.close()


def test_closing_the_attach_stream_stops_the_job(d):
    c, r = attach(d, dict(SLEEPER, name="gone"))
    assert r.status == 200
    first = json.loads(r.readline())
    assert first["type"] == "status" and first["job"]["name"] == "gone"
    c.sock.close()
    c.close()
    job = wait_phase(d, "gone", ("Stopped",))
    assert job["status"]["message"] == "client disconnected"
    assert h_delete(d, "gone") == 200


def test_dask_without_the_node_network_is_503(legion_bin, tmp_path):
    d = start_legiond(tmp_path, args=["--network", "off", "--job-warm", "0"])
    try:
        st, body = submit(d, {"name": "dask", "engine": "dask", "command": ["python3", "-c", "pass"]})
        assert st == 503, body
        assert "--network" in message(body)
        assert jobs(d) == []
    finally:
        kill_legiond(d)


def test_cli_refuses_bad_flags_before_asking(d, tmp_path):
    """Usage errors (exit 2) name the flag, and nothing reaches legiond."""
    for args, word in ((["--executor-memory", "lots"], "--executor-memory"), (["--executor-cores", "-1"], "cores"),
                       (["--driver-cores", "0"], "cores"), (["--num-executors", "0"], "--num-executors"),
                       (["--max-duration", "10x"], "--max-duration"), (["--keep-alive=0"], "--keep-alive"),
                       (["--engine", "spark"], "--engine"), (["--env", "NOEQUALS"], "--env"),
                       (["--completions", "-3"], "--completions")):
        out, err = d.cli("submit", "--name", "x", *args, "--engine", "indexed", "--", "true", check=2)
        assert word in err, (args, err)
    out, err = d.cli("job", "logs", "x", "--role", "boss", check=2)
    assert "--role" in err
    assert jobs(d) == []


def test_cli_files_that_cannot_be_packed(d, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "data").mkdir()
    (tmp_path / "b" / "data").mkdir()
    (tmp_path / "a" / "data" / "x").write_text("x")
    # Two paths that would both be /job/data; a path that does not exist.
    out, err = d.cli("submit", "--engine", "indexed", "--files", str(tmp_path / "a" / "data"),
                     "--files", str(tmp_path / "b" / "data"), "--", "true", check=1)
    assert "data" in err
    out, err = d.cli("submit", "--engine", "indexed", "--files", str(tmp_path / "nope"), "--", "true", check=1)
    assert "nope" in err
    assert jobs(d) == []


def test_cli_submit_refused_says_why(d):
    out, err = d.cli("submit", "--name", "Bad_Name", "--engine", "indexed", "--", "true", check=1)
    assert "Bad_Name" in err
    out, err = d.cli("submit", "--detach", "--name", "big", "--engine", "indexed", "--parallelism", "8",
                     "--completions", "8", "--executor-cores", "1", "--", "true", check=1)
    assert "--job-cpu" in err
    assert jobs(d) == []
