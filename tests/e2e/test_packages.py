"""Package uploads against the real legiond: a hostile package of many empty
entries is extracted off the event loop (GET /healthz keeps being answered
while it is) and refused with the entry limit named, leaving nothing behind;
a package of exactly that many entries uploads and deploys."""
import http.client
import io
import json
import os
import re
import tarfile
import threading
import time

import pytest

from test_legiond import start_legiond

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def entry_limit():
    """LG_PKG_DEFAULT_MAX_ENTRIES, as src/pkg/pkg.h defines it."""
    with open(os.path.join(ROOT, "src", "pkg", "pkg.h")) as f:
        return int(re.search(r"#define LG_PKG_DEFAULT_MAX_ENTRIES (\d+)", f.read()).group(1))


LIMIT = entry_limit()


@pytest.fixture()
def legiond(legion_bin, tmp_path):
    d = start_legiond(tmp_path)
    yield d
    d.stop()


def ns_token(d, ns):
    assert d.http("POST", "/v1/namespaces", body={"name": ns})[0] == 201
    st, body = d.http("POST", f"/v1/namespaces/{ns}/tokens", body={})
    assert st == 201, body
    return json.loads(body)["token"]


def tar_gz(n_empty, files=None):
    """A tar.gz of the given files and n_empty empty files below e/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.USTAR_FORMAT) as t:
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for i in range(n_empty):
            t.addfile(tarfile.TarInfo("e/%06d" % i))
    return buf.getvalue()


def store_entries(d):
    """What the package store holds: blobs (finished or not) and trees."""
    pkg = os.path.join(d.home, "packages")
    return {sub: sorted(os.listdir(os.path.join(pkg, sub))) for sub in ("blobs/sha256", "extracted")}


def test_hostile_upload_is_extracted_off_the_loop_and_refused(legiond):
    token = ns_token(legiond, "team-a")
    payload = tar_gz(101000)
    assert len(payload) < 1 << 20, len(payload)  # the 0.9 MB
    before = store_entries(legiond)

    extracted = os.path.join(legiond.home, "packages", "extracted")
    done = threading.Event()   # the upload's response has arrived
    upload = {}
    # (answered, latency, asked for once the extraction had begun, answered
    # before the upload was)
    polls = []

    def do_upload():
        c = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=300)
        c.request("POST", "/v1/namespaces/team-a/packages", body=payload,
                  headers={"Authorization": "Bearer " + token, "Content-Type": "application/gzip"})
        r = c.getresponse()
        upload["status"], upload["body"] = r.status, r.read()
        done.set()
        c.close()

    def poll_healthz():
        # One request at a time, each on a new connection, until the upload
        # is answered. The extraction has begun once its temporary tree is
        # there.
        extracting = False
        while not done.is_set():
            extracting = extracting or any(n.startswith(".tmp-x-") for n in os.listdir(extracted))
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=300)
                c.request("GET", "/healthz")
                r = c.getresponse()
                ok = r.status == 200 and json.loads(r.read()) == {"status": "ok"}
                c.close()
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
            polls.append((ok, time.monotonic() - t0, extracting, not done.is_set()))

    poller = threading.Thread(target=poll_healthz)
    uploader = threading.Thread(target=do_upload)
    poller.start()
    uploader.start()
    uploader.join(timeout=600)
    poller.join(timeout=600)
    assert not uploader.is_alive() and not poller.is_alive()

    during = [lat for ok, lat, extracting, before_done in polls if ok and extracting and before_done]
    worst = max(lat for _, lat, _, _ in polls)
    print(f"\n{len(polls)} /healthz asked, {len(during)} answered while the package was extracted; "
          f"worst latency {worst * 1000:.1f} ms")
    assert polls and all(ok for ok, _, _, _ in polls)
    # Causal, not timed: health checks asked for once the extraction had
    # begun were answered before the upload was. On a loop busy with the
    # extraction the first of them would wait until the upload is answered,
    # and at most that one could race the upload's answer to the client.
    assert len(during) >= 3, (len(during), len(polls), worst)

    assert upload["status"] == 400, upload
    err = json.loads(upload["body"])["error"]
    assert err["code"] == "BadPackage"
    assert err["message"] == f"package has more than {LIMIT} entries", err

    # Nothing of it is kept: no blob, no temporary file, no tree.
    assert store_entries(legiond) == before
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200


def test_clients_gone_while_extracting_or_waiting(legiond):
    """Uploads whose clients go away, one while its package is extracted and
    one while it waits for that: both end cleanly, and the next upload is
    answered (after both) with only its own package in the store."""
    token = ns_token(legiond, "team-c")
    hostile = tar_gz(101000)
    blobs = os.path.join(legiond.home, "packages", "blobs", "sha256")
    extracted = os.path.join(legiond.home, "packages", "extracted")

    def send(payload):
        c = http.client.HTTPConnection("127.0.0.1", legiond.port, timeout=300)
        c.request("POST", "/v1/namespaces/team-c/packages", body=payload,
                  headers={"Authorization": "Bearer " + token})
        return c

    first = send(hostile)
    legiond.wait_for(lambda: any(n.startswith(".tmp-x-") for n in os.listdir(extracted)), timeout=120,
                     what="the first upload's extraction")
    second = send(hostile)

    def second_received():
        for n in os.listdir(blobs):
            try:
                if n.startswith(".tmp-put-") and os.path.getsize(os.path.join(blobs, n)) == len(hostile):
                    return True
            except FileNotFoundError:
                pass
        return False

    legiond.wait_for(second_received, timeout=120, what="the second upload's body")
    second.close()
    first.close()

    good = tar_gz(0, {"main.py": b"def main(req):\n    return 'ok'\n"})
    st, body = legiond.http("POST", "/v1/namespaces/team-c/packages", body=good, token=token, timeout=300)
    assert st == 201, body
    digest = json.loads(body)["digest"]
    assert store_entries(legiond) == {"blobs/sha256": [digest], "extracted": [digest]}
    assert legiond.http("GET", "/healthz", auth=False)[0] == 200


def test_package_at_the_entry_limit_uploads_and_deploys(legiond):
    token = ns_token(legiond, "team-b")
    main = (b"import os\n"
            b"def main(req):\n"
            b"    return {'empty': len(os.listdir('/code/e'))}\n")
    payload = tar_gz(LIMIT - 1, {"main.py": main})
    st, body = legiond.http("POST", "/v1/namespaces/team-b/packages", body=payload, token=token,
                            timeout=300)
    assert st == 201, body
    doc = json.loads(body)
    assert doc["files"] == LIMIT and doc["top"] == ["e", "main.py"], doc
    st, body = legiond.http("PUT", "/v1/namespaces/team-b/apps/big", token=token,
                            body={"runtime": "python3", "package": doc["digest"], "entrypoint": "main:main"})
    assert st == 201, body
    st, body = legiond.http("GET", "/fn/team-b/big/", token=token)
    assert st == 200, body
    assert json.loads(body) == {"empty": LIMIT - 1}
