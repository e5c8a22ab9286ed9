"""The fixed Dask workload of bench/jobs: the driver script, run the same
way through `legion submit` (the job's package, at /job) and on plain
dask-scheduler and dask-worker processes on the host (bench/jobs/bench.py).

It records, in wall-clock seconds (time.time(): sandboxes and the host
share the clock):
  script     when this script starts (the driver runtime has waited for
             the executors by then)
  first      when the first task started on a worker (a task that returns
             time.time())
  array      a dask.array reduction, done
  bag        a dask.bag word count over data/*.txt next to this file, done
  registered when each worker registered with the scheduler (the
             scheduler's add-worker events, by worker name)
and prints them, with the results, as one line `BENCH {json}` on stdout.
Environment: DASK_SCHEDULER_ADDRESS; BENCH_WORKLOAD=none skips the array
and the bag (bench/jobs' readiness jobs), BENCH_ARRAY_N the array's side."""
import time

T_SCRIPT = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from distributed import Client  # noqa: E402


def stamp():
    return time.time()


def registrations(client, since):
    """{worker name: registration time} of the workers connected now that
    registered after `since` (a kept master's older events are skipped)."""
    names = {a: str(w.get("name")) for a, w in client.scheduler_info()["workers"].items()}
    out = {}
    for t, msg in client.get_events("all"):
        if isinstance(msg, dict) and msg.get("action") == "add-worker" and t >= since:
            name = names.get(msg.get("worker"))
            if name is not None:
                out[name] = t
    return out


def main():
    client = Client(os.environ["DASK_SCHEDULER_ADDRESS"])
    t_client = time.time()
    first = client.submit(stamp, pure=False).result()
    res = {"script": T_SCRIPT, "client": t_client, "first": first}
    if os.environ.get("BENCH_WORKLOAD", "full") != "none":
        import dask.array as da
        import dask.bag as db

        n = int(os.environ.get("BENCH_ARRAY_N", "12000"))
        x = da.random.RandomState(14).random_sample((n, n), chunks=(n // 6, n // 6))
        res["array_sum"] = float(((x - 0.5) ** 2).sum().compute())
        res["array"] = time.time()
        data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "*.txt")
        counts = db.read_text(data, blocksize=None).str.split().flatten().frequencies().compute()
        res["bag_words"] = sum(c for _, c in counts)
        res["bag_top"] = sorted(counts, key=lambda wc: (-wc[1], wc[0]))[:5]
        res["bag"] = time.time()
    res["registered"] = registrations(client, float(os.environ.get("BENCH_SINCE", "0")))
    res["workers"] = len(client.scheduler_info()["workers"])
    client.close()
    res["end"] = time.time()
    sys.stdout.write("BENCH " + json.dumps(res) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
