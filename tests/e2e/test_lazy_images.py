"""Lazy images end to end (issue 13, docs/lazy-images.md), as a user runs
them: one legiond (the converter) pulls images from a docker-registry on
loopback and `legion image convert --push`es their lazy form (EROFS
metadata, chunk table, blob) as an artifact referring to the image; a
second legiond with a fresh home (empty chunk store) pulls them lazily,
through a proxy that counts, holds or cuts what the registry serves, and
runs pods and container apps from them without any change in their specs.

Checked: what a sandbox reads lazily is byte for byte the image (sha256 of
every file against the layer tars); `legion image inspect` shows how much
is local; a corrupt chunk in the registry is EIO, never wrong bytes; a
registry outage fails only what was not fetched, with EIO in bounded time,
never zeros; the fetcher killed during 20 concurrent cold starts and
legiond killed with lazy sandboxes running break no read; images without
the artifact and `--lazy never` are pulled in full; chunks shared between
images are fetched and stored once; GC takes a removed image's chunks and
mounts and keeps shared ones; a hostile artifact is refused, falling back
or failing, with nothing half recorded; what a first start read is fetched
first next time, hydration makes an image wholly local, and a registry
with bearer tokens serves the fetcher's range reads."""
import concurrent.futures
import json
import os
import re
import shutil
import signal

import pytest

import lazy_kit as lk
import oci_kit
from apps_kit import call_json, delete, deploy, status
from lazy_kit import RegistryProxy, host_sums, layer_hexes, read_files
from test_legiond import stop_workloads

MiB = 1 << 20


@pytest.fixture(scope="module")
def top():
    lk.require()
    t = lk.workdir("lg-lazy-")
    yield t
    shutil.rmtree(t, ignore_errors=True)


@pytest.fixture(scope="module")
def reg(top):
    r = oci_kit.Registry(top)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def conv(top):
    """The node that converts and pushes (its own home)."""
    d = lk.new_node(top, "converter", hydrate=True)
    yield d
    lk.stop_node(d)


@pytest.fixture(scope="module")
def base():
    return lk.reader_layer()


@pytest.fixture(scope="module")
def data_image(base):
    """busybox + 8 random data files of 1 MiB (plus an odd-sized one)."""
    files = lk.random_files(8, MiB)
    files["odd.bin"] = os.urandom(3 * 65536 + 1234)
    return oci_kit.Image([base, lk.data_layer(files)], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})


@pytest.fixture(scope="module")
def published(conv, reg):
    """publish(img, repo): img pushed with its lazy artifact, once per module."""
    done = {}

    def publish(img, repo):
        if repo not in done:
            done[repo] = lk.publish(conv, reg, img, repo)
        return done[repo]

    return publish


@pytest.fixture()
def proxy(reg):
    p = RegistryProxy(reg.host)
    yield p
    p.stop()


@pytest.fixture()
def node(top, request):
    """A fresh legiond (empty chunk store, its own fetcher), no hydration."""
    d = lk.new_node(top, "n-" + request.node.name.replace("[", "-").replace("]", "")[:40])
    yield d
    lk.stop_node(d)


def data_paths(d, img, layer=1):
    """{image path: host path in the layer's mount} of a layer's files."""
    hexd = layer_hexes(img)[layer]
    return {p: os.path.join(lk.layer_dir(d, hexd), p) for p in lk.layer_files(img, layer)}


def erofs_blob_digests(d, img):
    """The lazy blob digest of each of img's layers on node d (source.json)."""
    return [lk.source_of(d, h)["digest"] for h in layer_hexes(img)]


def served_blob_bytes(proxy, d, img):
    return sum(proxy.blob_bytes(b) for b in erofs_blob_digests(d, img))


# ---- lazy start -------------------------------------------------------------------------------------

def test_lazy_pod_reads_every_file_as_the_original(node, proxy, published, base):
    """A pod whose image is not on the node: the pod manager pulls it, lazily
    (the spec says nothing about it); a small start fetches a small part;
    sha256 of every file of the image read in a pod equals the layer tars'."""
    d = node
    img = oci_kit.Image([base, oci_kit.python_layer_cached(), lk.data_layer(lk.random_files(4, MiB), "py")],
                        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    ref = f"{proxy.host}/{published(img, 'lazy/python')}"
    lk.create_pod(d, "peek", ref, "cat /data/.layer-py")
    pod = lk.wait_pod_done(d, "peek")
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], lk.pod_logs(d, "peek"))
    assert lk.pod_logs(d, "peek") == "py\n"
    hexes = layer_hexes(img)
    # Every layer is a lazy one: its lazy form, its source (the registry
    # as this node reached it), an EROFS mount where an extracted layer was.
    for h in hexes:
        assert lk.is_lazy_mount(d, h), (h, lk.mounts_under(d.home))
        src = lk.source_of(d, h)
        assert src.get("registry") == proxy.host and src.get("repository") == "lazy/python", src
        meta = json.load(open(os.path.join(d.home, "images", "layers", h + ".json")))
        assert meta.get("lazy") is True, meta
    # Little was fetched, and inspect says so: partial local bytes.
    doc = lk.inspect(d, ref)
    lz = lk.lazy_of(doc)
    assert lz["bytes"] >= 25 * MiB and 0 < lz["localBytes"] < lz["bytes"] // 2, lz
    assert 0 < lz["localChunks"] < lz["chunks"], lz
    assert served_blob_bytes(proxy, d, img) < lz["bytes"] // 2, proxy.served
    # The CLI says it in words, on stderr (stdout stays JSON).
    out, err = d.cli("image", "inspect", ref)
    said = re.search(r"local: (\S+ \S+) of (\S+ \S+) \(([0-9.]+)%\)", err)
    assert said and 0 < float(said.group(3)) < 50, err
    assert json.loads(out)["lazy"] == lz
    # Whole image, read in a pod: every file's sha256 is the original's.
    expected = host_sums(img)
    lk.create_pod(d, "sums", ref, lk.sum_script(sorted({p.split("/")[0] for p in expected})))
    pod = lk.wait_pod_done(d, "sums")
    log = lk.pod_logs(d, "sums")
    sums, errors, done = lk.parse_sums(log)
    assert pod["status"]["phase"] == "Succeeded" and done == 0 and errors == [], (pod["status"], errors[:20])
    assert len(expected) > 600
    assert lk.compare_sums(expected, sums) == {}
    lz2 = lk.lazy_of(lk.inspect(d, ref))
    assert lz2["localBytes"] > lz["localBytes"] and lz2["localChunks"] > lz["localChunks"], (lz, lz2)
    # What was fetched is in the chunk store, verified: each chunk file is
    # named by its sha256.
    chunks = lk.chunk_files(d)
    assert chunks
    for sha in list(chunks)[:50]:
        assert oci_kit.sha256(open(lk.chunk_path(d, sha), "rb").read()) == sha
    lk.delete_pod(d, "peek")
    lk.delete_pod(d, "sums")


def test_lazy_container_app(node, proxy, published):
    """A container app deployed with an image that is only in the registry:
    pulled lazily at deploy, it answers, and only part of the image is local."""
    d = node
    img = oci_kit.pyweb_image("lazy")
    ref = f"{proxy.host}/{published(img, 'lazy/pyweb')}"
    try:
        deploy(d, "lazyweb", {"image": ref, "port": 8080})
        r = call_json(d, "lazyweb", "/hi")
        assert r["app"] == "pyweb" and r["version"] == "lazy" and r["path"] == "/hi", r
        assert status(d, "lazyweb")["image"]["id"] == img.id
        for h in layer_hexes(img):
            assert lk.is_lazy_mount(d, h), (h, lk.mounts_under(d.home))
        lz = lk.lazy_of(lk.inspect(d, ref))
        assert 0 < lz["localBytes"] < lz["bytes"], lz
        # A second instance shares the mounts: no new mount, still answers.
        mounts = lk.mounts_under(d.home)
        deploy(d, "lazyweb2", {"image": ref, "port": 8080})
        assert call_json(d, "lazyweb2", "/")["version"] == "lazy"
        assert sorted(lk.mounts_under(d.home)) == sorted(mounts)
    finally:
        delete(d, "lazyweb")
        delete(d, "lazyweb2")


# ---- never wrong, never silent --------------------------------------------------------------------

def find_in_blob(path, needle):
    with open(path, "rb") as f:
        data = f.read()
    off = data.find(needle)
    assert off >= 0 and data.find(needle, off + 1) < 0
    return off


def test_corrupt_chunk_is_eio_never_wrong_bytes(node, proxy, published, conv, reg, base):
    """One byte of the blob changed in the registry's storage: the file
    whose chunk it is fails with EIO (on the host's mount and in a pod),
    every other file reads right, the bad bytes never enter the chunk
    store, and the file reads right once the registry has the right bytes
    again. A chunk corrupted in the node's store is never served either."""
    d = node
    files = lk.random_files(4, 512 * 1024, "c")
    img = oci_kit.Image([base, lk.data_layer(files, "corrupt")], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    repo = published(img, "lazy/corrupt")
    _, _, cfg = lk.artifact(reg, "lazy/corrupt", img)
    layer = next(x for x in cfg["layers"] if x["layer"] == img.layer_descs[1]["digest"])
    stored = reg.blob_path(layer["blob"])
    victim = files["c01.bin"]
    at = find_in_blob(stored, victim[69632:69632 + 4096]) + (70000 - 69632)
    with open(stored, "r+b") as f:
        f.seek(at)
        good = f.read(1)
        f.seek(at)
        f.write(bytes([good[0] ^ 0xFF]))
    ref = f"{proxy.host}/{repo}"
    lk.pull(d, ref)
    paths = data_paths(d, img)
    want = {p: oci_kit.sha256(b) for p, b in lk.layer_files(img, 1).items()}
    got = read_files(paths.values())
    for p, hp in paths.items():
        if p == "data/c01.bin":
            assert got[hp] == "EIO", (p, got[hp])
        else:
            assert got[hp] == want[p], (p, got[hp])
    # Again: still EIO (nothing wrong was kept), the same in a sandbox.
    assert read_files([paths["data/c01.bin"]], drop=True)[paths["data/c01.bin"]] == "EIO"
    lk.create_pod(d, "bad", ref, "sha256sum /data/c00.bin /data/c01.bin /data/c02.bin; echo \"DONE $?\"")
    lk.wait_pod_done(d, "bad")
    sums, errors, done = lk.parse_sums(lk.pod_logs(d, "bad"))
    assert done != 0 and any("c01.bin" in e and "Input/output error" in e for e in errors), (sums, errors)
    assert "data/c01.bin" not in sums and sums.get("data/c00.bin") == want["data/c00.bin"], sums
    # The corrupt bytes are in no chunk of the store.
    corrupt = victim[:70000] + bytes([victim[70000] ^ 0xFF])
    for sha in lk.chunk_files(d):
        data = open(lk.chunk_path(d, sha), "rb").read()
        assert corrupt[-4096:] not in data
    # The registry has the right bytes again: the file reads right.
    with open(stored, "r+b") as f:
        f.seek(at)
        f.write(good)
    hp = paths["data/c01.bin"]
    assert read_files([hp], drop=True)[hp] == want["data/c01.bin"]
    # A chunk of the node's store changed on disk: never served as it is
    # (the read is right again, refetched, or EIO).
    hp0 = paths["data/c00.bin"]
    csize, _, table = lk.parse_chunks(open(lk.lazy_dir(d, "layers", layer_hexes(img)[1], "chunks"), "rb").read())
    first = oci_kit.sha256(files["c00.bin"][:csize])
    assert any(c[3] == first for c in table), "no chunk of the table is c00.bin's first"
    cp = lk.chunk_path(d, first)
    assert os.path.exists(cp)
    os.chmod(cp, 0o644)
    with open(cp, "r+b") as f:
        f.write(b"\0" * 16)
    r = read_files([hp0], drop=True)[hp0]
    assert r in (want["data/c00.bin"], "EIO"), r
    lk.delete_pod(d, "bad")


def test_registry_outage_fails_only_unfetched_ranges(node, proxy, published, data_image):
    """Files read before the registry went away still read (from the chunk
    store, the page cache dropped); files never read fail with EIO, in
    bounded time, never with zeros, on the host and in a pod; a registry
    that accepts and never answers is EIO too (the fetcher's timeout); once
    it is back, the same files read right."""
    d = node
    ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    lk.pull(d, ref)
    paths = data_paths(d, data_image)
    want = {p: oci_kit.sha256(b) for p, b in lk.layer_files(data_image, 1).items()}
    before = ["data/f00.bin", "data/f01.bin", "data/f02.bin"]
    got = read_files([paths[p] for p in before])
    assert all(got[paths[p]] == want[p] for p in before), got
    # Also /bin/busybox and the applets' target, for the pod below.
    lk.create_pod(d, "warm", ref, "sha256sum /data/f00.bin")
    assert lk.wait_pod_done(d, "warm")["status"]["phase"] == "Succeeded"
    proxy.stop()
    got = read_files([paths[p] for p in before], drop=True)
    assert all(got[paths[p]] == want[p] for p in before), got
    cold = ["data/f03.bin", "data/f04.bin", "data/odd.bin"]
    got = read_files([paths[p] for p in cold], drop=True)
    assert all(got[paths[p]] == "EIO" for p in cold), got
    # In a sandbox: the fetched file reads, the other fails with EIO.
    lk.create_pod(d, "outage", ref, "sha256sum /data/f01.bin /data/f05.bin; echo \"DONE $?\"")
    lk.wait_pod_done(d, "outage")
    sums, errors, done = lk.parse_sums(lk.pod_logs(d, "outage"))
    assert sums == {"data/f01.bin": want["data/f01.bin"]}, (sums, errors)
    assert done != 0 and any("f05.bin" in e and "Input/output error" in e for e in errors), errors
    # A registry that takes the request and never answers.
    proxy.start()
    proxy.hold()
    hp = paths["data/f06.bin"]
    assert read_files([hp], drop=True)[hp] == "EIO"
    assert proxy.held >= 1
    proxy.release()
    # Back: what failed reads right; nothing was remembered as bad.
    got = read_files([paths[p] for p in cold + ["data/f05.bin", "data/f06.bin"]], drop=True)
    assert all(got[paths[p]] == want[p] for p in cold + ["data/f05.bin", "data/f06.bin"]), got
    lk.delete_pod(d, "warm")
    lk.delete_pod(d, "outage")


def test_fetcher_killed_during_20_concurrent_cold_starts(node, proxy, published, data_image):
    """20 pods start at once from a lazy image with nothing local; the
    fetcher is SIGKILLed while their first reads wait on the registry;
    legiond starts another, which takes the same FUSE connection over and
    gets the pending reads resent: all 20 read every file right."""
    d = node
    ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    lk.pull(d, ref)
    want = host_sums(data_image)
    first = lk.fetcher_pid(d)
    assert first, "no fetcher runs"
    proxy.hold()
    script = lk.sum_script(["bin/busybox", "data"])
    n = 20
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(lk.create_pod, d, f"cold{i}", ref, script) for i in range(n)]
        # A read is on its way to the registry (a cold start waits on it).
        d.wait_for(lambda: proxy.held >= 1, timeout=120, what="a range request")
        os.kill(first, signal.SIGKILL)
        again = d.wait_for(lambda: (lk.fetcher_pid(d) or first) != first and lk.fetcher_pid(d), timeout=60,
                           what="a new fetcher")
        proxy.release()
        for f in futs:
            f.result()
    assert again != first
    bad = {}
    for i in range(n):
        pod = lk.wait_pod_done(d, f"cold{i}")
        sums, errors, done = lk.parse_sums(lk.pod_logs(d, f"cold{i}"))
        wrong = lk.compare_sums(want, sums, [p for p in want if p == "bin/busybox" or p.startswith("data/")])
        if pod["status"]["phase"] != "Succeeded" or done != 0 or errors or wrong:
            bad[i] = (pod["status"]["phase"], done, errors[:3], wrong)
    assert bad == {}, bad
    for i in range(n):
        lk.delete_pod(d, f"cold{i}")


def test_legiond_kill9_lazy_sandboxes_keep_reading(node, proxy, published, data_image):
    """legiond killed with SIGKILL while a pod reads a lazy image file after
    file: the fetcher lives on and serves cold reads; the next legiond
    takes it (same fetcher, same mounts, no second mount) and the pod
    finishes with every sum right; when that fetcher dies, the new legiond
    starts another."""
    d = node
    ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    lk.pull(d, ref)
    want = host_sums(data_image)
    paths = data_paths(d, data_image)
    lk.create_pod(d, "slow", ref, "for f in /data/f0*.bin; do sha256sum $f; sleep 1; done; echo \"DONE $?\"")
    d.wait_for(lambda: lk.parse_sums(lk.pod_logs(d, "slow"))[0], timeout=120, what="a first sum")
    fetcher = lk.fetcher_pid(d)
    mounts = sorted(lk.mounts_under(d.home))
    d.stop(signal.SIGKILL, keep=True)
    assert lk.fetcher_pid(d) == fetcher, "the fetcher died with legiond"
    hp = paths["data/f07.bin"]
    assert read_files([hp], drop=True)[hp] == want["data/f07.bin"]
    d.start()
    assert lk.fetcher_pid(d) == fetcher, "the new legiond did not keep the living fetcher"
    assert sorted(lk.mounts_under(d.home)) == mounts
    pod = lk.wait_pod_done(d, "slow")
    sums, errors, done = lk.parse_sums(lk.pod_logs(d, "slow"))
    assert pod["status"]["phase"] == "Succeeded" and errors == [] and done == 0, (pod["status"], errors)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert len(sums) == 8 and lk.compare_sums(want, sums, list(sums)) == {}, sums
    # The new legiond watches the fetcher it took over.
    os.kill(fetcher, signal.SIGKILL)
    d.wait_for(lambda: (lk.fetcher_pid(d) or fetcher) != fetcher, timeout=60, what="a new fetcher")
    hp = paths["data/odd.bin"]
    assert read_files([hp], drop=True)[hp] == want["data/odd.bin"]
    lk.delete_pod(d, "slow")


def test_stop_all_ends_a_read_the_fetcher_never_answers(node, proxy, published, data_image):
    """A pod blocked in a read the fetcher took and will never answer (the
    fetcher stopped with SIGSTOP mid-fetch) cannot be killed until the FUSE
    connection is aborted: `legiond --stop-all` aborts it first, so it ends
    and leaves no process or mount (calibrated: with the abort after the
    sandboxes, stop-all hangs on the pod and times out)."""
    d = node
    ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    lk.pull(d, ref)
    fetcher = lk.fetcher_pid(d)
    proxy.hold()
    lk.create_pod(d, "stuck", ref, "cat /data/f03.bin > /dev/null; echo DONE $?")
    d.wait_for(lambda: proxy.held >= 1, timeout=120, what="a range request")
    os.kill(fetcher, signal.SIGSTOP)
    try:
        proxy.release()
        d.stop(signal.SIGKILL, keep=True)
        # stop_workloads asserts --stop-all exits 0 within its timeout;
        # stop_node's kill_legiond then finds no process and no mount.
        stop_workloads(d.home, d.env, d.log, d.net_args)
    finally:
        if os.path.exists(f"/proc/{fetcher}"):
            os.kill(fetcher, signal.SIGCONT)


# ---- fallback ------------------------------------------------------------------------------------

def assert_not_lazy(d, img):
    for h in layer_hexes(img):
        assert not lk.is_lazy_mount(d, h) and os.path.isdir(lk.layer_dir(d, h)), h
        assert h not in lk.lazy_layers(d), h
        meta = json.load(open(os.path.join(d.home, "images", "layers", h + ".json")))
        assert not meta.get("lazy"), meta


def assert_consistent(d):
    """Nothing half recorded: every lazy layer of the node is mounted and
    marked lazy in the image store, every EROFS mount is a lazy layer's."""
    lazy = lk.lazy_layers(d)
    assert {lk.layer_dir(d, h) for h in lazy} == lk.erofs_mounts(d), (lazy, lk.mounts_under(d.home))
    for h in lazy:
        meta = json.load(open(os.path.join(d.home, "images", "layers", h + ".json")))
        assert meta.get("lazy") is True, (h, meta)


def test_fallback_to_full_pull(node, proxy, reg, published, data_image, base):
    """An image without a lazy artifact is pulled in full (the pull says so
    and why); `--lazy never` pulls in full an image that has one. Both run."""
    d = node
    plain = oci_kit.Image([base, lk.data_layer(lk.random_files(2, MiB, "p"), "plain")],
                          config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    reg.push(plain, "lazy/plain", "1")
    ref = f"{proxy.host}/lazy/plain:1"
    lines, doc = lk.pull_api(d, ref)
    said = [x for x in lines + [doc] if "lazy" in x or "lazyReason" in x]
    assert said and said[-1].get("lazy") is False and said[-1].get("lazyReason"), (lines, doc)
    assert_not_lazy(d, plain)
    assert lk.chunk_files(d) == {}
    lk.create_pod(d, "plain", ref, lk.sum_script(["data"]))
    assert lk.wait_pod_done(d, "plain")["status"]["phase"] == "Succeeded"
    sums, errors, _ = lk.parse_sums(lk.pod_logs(d, "plain"))
    want = host_sums(plain)
    assert errors == [] and lk.compare_sums(want, sums, [p for p in want if p.startswith("data/")]) == {}
    # --lazy never, although the registry has the lazy form: whole layers
    # fetched, no lazy blob touched, nothing mounted.
    ref2 = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    out, err = lk.pull(d, ref2, "--lazy", "never")
    assert_not_lazy(d, data_image)
    for desc in data_image.layer_descs:
        assert proxy.blob_bytes(desc["digest"]) == desc["size"], (desc, proxy.served)
    assert lk.erofs_mounts(d) == set() and lk.chunk_files(d) == {}
    lk.create_pod(d, "never", ref2, lk.sum_script(["data"]))
    assert lk.wait_pod_done(d, "never")["status"]["phase"] == "Succeeded"
    sums, errors, _ = lk.parse_sums(lk.pod_logs(d, "never"))
    want = host_sums(data_image)
    assert errors == [] and lk.compare_sums(want, sums, [p for p in want if p.startswith("data/")]) == {}
    # The API's way of saying never.
    _, doc = lk.pull_api(d, ref2, lazy="never")
    assert lk.erofs_mounts(d) == set()
    lk.delete_pod(d, "plain")
    lk.delete_pod(d, "never")


# ---- dedup and GC ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twins(base):
    """Two images whose second layers differ (a file of their own each) but
    hold the same 8 MiB file: (img1, img2, big, own1, own2)."""
    big = os.urandom(8 * MiB)
    own1, own2 = os.urandom(MiB), os.urandom(MiB)
    cfg = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    one = oci_kit.Image([base, lk.data_layer({"big.bin": big, "own.bin": own1}, "one")], config=cfg)
    two = oci_kit.Image([base, lk.data_layer({"big.bin": big, "own.bin": own2}, "two")], config=cfg)
    return one, two, big, own1, own2


def chunk_shas(data, csize):
    return {oci_kit.sha256(data[i:i + csize]) for i in range(0, len(data), csize)}


def table_of(d, img, layer=1):
    return lk.parse_chunks(open(lk.lazy_dir(d, "layers", layer_hexes(img)[layer], "chunks"), "rb").read())


def test_dedup_of_shared_chunks(node, proxy, published, twins):
    """The second image's copy of the big file is local as soon as it is
    pulled (inspect counts it), reading it fetches nothing, and the chunk
    store holds one copy."""
    d = node
    one, two, big, own1, own2 = twins
    ref1 = f"{proxy.host}/{published(one, 'lazy/one')}"
    ref2 = f"{proxy.host}/{published(two, 'lazy/two')}"
    lk.pull(d, ref1)
    p1 = data_paths(d, one)
    got = read_files([p1["data/big.bin"], p1["data/own.bin"]])
    assert got[p1["data/big.bin"]] == oci_kit.sha256(big) and got[p1["data/own.bin"]] == oci_kit.sha256(own1)
    blob1, blob2 = erofs_blob_digests(d, one)[1], None
    assert proxy.blob_bytes(blob1) >= len(big) + len(own1)
    lk.pull(d, ref2)
    blob2 = lk.source_of(d, layer_hexes(two)[1])["digest"]
    assert blob2 != blob1
    csize = table_of(d, two)[0]
    assert chunk_shas(big, csize) <= {c[3] for c in table_of(d, two)[2]}, "big.bin's chunks are not in the table"
    lz = lk.layer_lazy(lk.inspect(d, ref2))[1]
    assert lz["localBytes"] >= len(big), lz
    p2 = data_paths(d, two)
    got = read_files([p2["data/big.bin"]])
    assert got[p2["data/big.bin"]] == oci_kit.sha256(big)
    assert proxy.blob_bytes(blob2) < len(big) // 10, proxy.served
    got = read_files([p2["data/own.bin"]])
    assert got[p2["data/own.bin"]] == oci_kit.sha256(own2)
    # One copy: the store holds big.bin's chunks once, the whole store is
    # about big + own1 + own2 (twice big if they were stored per image).
    chunks = lk.chunk_files(d)
    assert chunk_shas(big, csize) <= set(chunks)
    total = sum(chunks.values())
    assert len(big) + len(own1) + len(own2) <= total < 2 * len(big), total


def test_gc_takes_removed_chunks_and_mounts_keeps_shared(node, proxy, published, twins):
    """rm + gc of one of two images sharing chunks: its own layer's mount,
    lazy form and chunks go; the shared chunks and the base layer stay and
    the other image still reads right with the registry gone. rm + gc of
    the other leaves no mount and an empty chunk store."""
    d = node
    one, two, big, own1, own2 = twins
    ref1 = f"{proxy.host}/{published(one, 'lazy/one')}"
    ref2 = f"{proxy.host}/{published(two, 'lazy/two')}"
    lk.pull(d, ref1)
    lk.pull(d, ref2)
    p1, p2 = data_paths(d, one), data_paths(d, two)
    read_files([p1["data/big.bin"], p1["data/own.bin"], p2["data/own.bin"]])
    csize = table_of(d, one)[0]
    h1, h2, hb = layer_hexes(one)[1], layer_hexes(two)[1], layer_hexes(one)[0]
    assert chunk_shas(own1, csize) <= set(lk.chunk_files(d))
    d.cli("image", "rm", ref1)
    out, _ = d.cli("--json", "image", "gc")
    assert not lk.is_lazy_mount(d, h1) and not os.path.exists(lk.layer_dir(d, h1)), lk.mounts_under(d.home)
    assert h1 not in lk.lazy_layers(d)
    assert lk.is_lazy_mount(d, h2) and lk.is_lazy_mount(d, hb)
    chunks = set(lk.chunk_files(d))
    assert not (chunk_shas(own1, csize) & chunks), "the removed image's own chunks stayed"
    assert chunk_shas(big, csize) <= chunks and chunk_shas(own2, csize) <= chunks
    proxy.stop()
    got = read_files([p2["data/big.bin"], p2["data/own.bin"]], drop=True)
    assert got == {p2["data/big.bin"]: oci_kit.sha256(big), p2["data/own.bin"]: oci_kit.sha256(own2)}, got
    d.cli("image", "rm", ref2)
    d.cli("image", "gc")
    assert lk.erofs_mounts(d) == set(), lk.mounts_under(d.home)
    assert lk.lazy_layers(d) == set() and lk.chunk_files(d) == {}
    assert os.listdir(os.path.join(d.home, "images", "layers")) == []


# ---- hostile artifacts ---------------------------------------------------------------------------

def _chunks_garbage(cfg, blobs, entry):
    return cfg, {entry["chunks"]: b"LGCHUNK1" + os.urandom(4088)}


def _chunks_blob_size(cfg, blobs, entry):
    d = entry["chunks"]
    csize, bsize, chunks = lk.parse_chunks(blobs[d])
    return cfg, {d: lk.write_chunks(csize, bsize + 4096, chunks)}


def _chunks_gap(cfg, blobs, entry):
    d = entry["chunks"]
    csize, bsize, chunks = lk.parse_chunks(blobs[d])
    off, ln, fl, sha = chunks[0]
    chunks[0] = (off + 4096, ln, fl, sha)
    return cfg, {d: lk.write_chunks(csize, bsize, chunks)}


def _config_blob_size(cfg, blobs, entry):
    entry["blobSize"] += 4096
    return cfg, {}


def _config_chunk_size(cfg, blobs, entry):
    cfg["chunkSize"] = 3000
    return cfg, {}


def _config_garbage(cfg, blobs, entry):
    return b'{"chunkSize": 65536, "layers": [{"layer": 7', {}


def _meta_garbage(cfg, blobs, entry):
    return cfg, {entry["meta"]: os.urandom(65536)}


HOSTILE = {"chunks-garbage": _chunks_garbage, "chunks-blob-size": _chunks_blob_size, "chunks-gap": _chunks_gap,
           "config-blob-size": _config_blob_size, "config-chunk-size": _config_chunk_size,
           "config-garbage": _config_garbage, "meta-garbage": _meta_garbage}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_artifact_refused(node, proxy, conv, reg, base, kind):
    """An artifact whose chunk table, config or metadata is wrong is refused
    at pull: the pull falls back to the full image (saying why) or fails
    with a clear error; either way no lazy layer, mount, chunk or tmp file
    of it is left, and a fallen back image reads right."""
    d = node
    img = oci_kit.Image([base, lk.data_layer(lk.random_files(2, 300 * 1024, "h"), "hostile-" + kind)],
                        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    repo = f"hostile/{kind}"
    lk.publish(conv, reg, img, repo)
    lk.tamper_artifact(reg, repo, img, HOSTILE[kind])
    ref = f"{proxy.host}/{repo}:1"
    st, body = d.http("POST", "/v1/images/pull", {"image": ref}, headers={"Accept": "application/x-ndjson"},
                      timeout=300)
    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
    final = lines[-1] if lines else {}
    if st == 200 and "image" in final:
        said = [x for x in lines if "lazyReason" in x or x.get("lazy") is False]
        assert said and said[-1].get("lazyReason"), lines
        # The reason names what was wrong, not a temporary file gone by now.
        assert "/lazy/tmp/" not in said[-1]["lazyReason"], said[-1]["lazyReason"]
        paths = data_paths(d, img)
        want = {p: oci_kit.sha256(b) for p, b in lk.layer_files(img, 1).items()}
        got = read_files(paths.values())
        assert {p: got[hp] for p, hp in paths.items()} == want
    else:
        err = final.get("error") or json.loads(body or b"{}").get("error") or {}
        assert err.get("message"), (st, body)
        assert any(w in err["message"].lower() for w in ("lazy", "chunk", "artifact", "erofs")), err
        st2, _ = d.http("GET", f"/v1/images/{ref}")
        assert st2 == 404
    # The tampered layer is no lazy one; any other is a whole lazy layer.
    tampered = layer_hexes(img)[-1]
    assert not lk.is_lazy_mount(d, tampered) and tampered not in lk.lazy_layers(d), lk.mounts_under(d.home)
    assert_consistent(d)
    tmp = lk.lazy_dir(d, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == [], os.listdir(tmp)


def test_chunk_table_with_a_wrong_sum_is_eio(node, proxy, conv, reg, base):
    """A chunk table that parses but names a wrong sha256 for one chunk
    (what a pull cannot see without fetching everything): the file of that
    chunk fails with EIO, every other file reads right."""
    d = node
    files = lk.random_files(2, 300 * 1024, "w")
    img = oci_kit.Image([base, lk.data_layer(files, "wrong-sum")], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
    lk.publish(conv, reg, img, "hostile/wrong-sum")
    state = {}

    def change(cfg, blobs, entry):
        csize, bsize, chunks = lk.parse_chunks(blobs[entry["chunks"]])
        first = oci_kit.sha256(files["w00.bin"][:csize])
        i = next(i for i, c in enumerate(chunks) if c[3] == first)
        chunks[i] = chunks[i][:3] + (oci_kit.sha256(b"not these bytes"),)
        state["hit"] = i
        return cfg, {entry["chunks"]: lk.write_chunks(csize, bsize, chunks)}

    lk.tamper_artifact(reg, "hostile/wrong-sum", img, change)
    ref = f"{proxy.host}/hostile/wrong-sum:1"
    lk.pull(d, ref)
    assert lk.is_lazy_mount(d, layer_hexes(img)[1]), lk.mounts_under(d.home)
    paths = data_paths(d, img)
    got = read_files([paths["data/w00.bin"], paths["data/w01.bin"]])
    assert got[paths["data/w00.bin"]] == "EIO", got
    assert got[paths["data/w01.bin"]] == oci_kit.sha256(files["w01.bin"]), got


# ---- prefetch and hydration ----------------------------------------------------------------------

def test_prefetch_record_is_fetched_first_next_time(node, proxy, published, data_image):
    """What a first start read is recorded on the node: the image removed
    (GC takes its chunks) and pulled again, those ranges are fetched at once,
    before anything reads them (no hydration on this node), and read with
    the registry gone; what was never read is not there (EIO)."""
    d = node
    ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
    lk.pull(d, ref)
    lk.create_pod(d, "first", ref, "sha256sum /data/f02.bin /data/f05.bin")
    assert lk.wait_pod_done(d, "first")["status"]["phase"] == "Succeeded"
    lk.delete_pod(d, "first")
    d.cli("image", "rm", ref)
    d.cli("image", "gc")
    assert lk.chunk_files(d) == {}
    lk.pull(d, ref)
    want = host_sums(data_image)
    need = len(lk.layer_files(data_image, 1)["data/f02.bin"]) * 2
    d.wait_for(lambda: lk.layer_lazy(lk.inspect(d, ref))[1]["localBytes"] >= need, timeout=120,
               what=f"the recorded ranges fetched: {lk.inspect(d, ref)}")
    proxy.stop()
    paths = data_paths(d, data_image)
    got = read_files([paths["data/f02.bin"], paths["data/f05.bin"], paths["data/f00.bin"]])
    assert got[paths["data/f02.bin"]] == want["data/f02.bin"] and got[paths["data/f05.bin"]] == want["data/f05.bin"]
    assert got[paths["data/f00.bin"]] == "EIO", got


def test_hydration_makes_the_whole_image_local(top, proxy, published, data_image):
    """With background hydration (legiond's default rate), a lazily pulled
    image becomes wholly local without reads; then every file reads right
    with the registry gone."""
    d = lk.new_node(top, "hydrating", hydrate=True)
    try:
        ref = f"{proxy.host}/{published(data_image, 'lazy/data')}"
        lk.pull(d, ref)
        d.wait_for(lambda: lk.lazy_of(lk.inspect(d, ref))["localBytes"] == lk.lazy_of(lk.inspect(d, ref))["bytes"],
                   timeout=180, what=f"the image hydrated: {lk.inspect(d, ref)}")
        proxy.stop()
        want = host_sums(data_image)
        paths = {p: os.path.join(lk.layer_dir(d, layer_hexes(data_image)[i]), p)
                 for i in range(2) for p in lk.layer_files(data_image, i)}
        got = read_files(paths.values(), drop=True)
        assert {p: got[hp] for p, hp in paths.items()} == {p: want[p] for p in paths}
    finally:
        lk.stop_node(d)


# ---- registries with auth -------------------------------------------------------------------------

def test_lazy_pull_from_a_token_auth_registry(top, node, conv, base):
    """A registry with bearer tokens: convert --push with credentials, a
    lazy pull with them, and the fetcher's range reads (which need a token
    of their own) serve every file right; the credentials stay in the lazy
    layer's source.json, mode 0600."""
    d = node
    with oci_kit.Registry(os.path.join(top, "reg-token"), auth="token") as reg:
        files = lk.random_files(3, 700 * 1024, "t")
        img = oci_kit.Image([base, lk.data_layer(files, "token")], config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})
        ref = reg.push(img, "sec/app", "1")
        pw = reg.password.encode()
        conv.cli("image", "pull", ref, "--lazy", "never", "--username", reg.username, "--password-stdin",
                 input=pw, timeout=180)
        conv.cli("image", "convert", ref, "--push", "--username", reg.username, "--password-stdin", input=pw,
                 timeout=300)
        d.cli("image", "pull", ref, "--username", reg.username, "--password-stdin", input=pw, timeout=300)
        h = layer_hexes(img)[1]
        assert lk.is_lazy_mount(d, h), lk.mounts_under(d.home)
        src = os.path.join(d.home, "lazy", "layers", h, "source.json")
        assert os.stat(src).st_mode & 0o777 == 0o600
        paths = data_paths(d, img)
        want = {p: oci_kit.sha256(b) for p, b in lk.layer_files(img, 1).items()}
        got = read_files(paths.values())
        assert {p: got[hp] for p, hp in paths.items()} == want
        # In a pod too (busybox comes lazily through the same client).
        lk.create_pod(d, "tok", ref, "sha256sum /data/t01.bin")
        assert lk.wait_pod_done(d, "tok")["status"]["phase"] == "Succeeded"
        assert lk.parse_sums(lk.pod_logs(d, "tok"))[0] == {"data/t01.bin": want["data/t01.bin"]}
        lk.delete_pod(d, "tok")
