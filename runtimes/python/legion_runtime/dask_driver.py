"""The driver of a dask job (docs/jobs.md), in its sandbox:

    python3 /opt/legion/runtime/python dask-driver SCRIPT [ARGS...]
    python3 /opt/legion/runtime/python dask-driver --exec COMMAND [ARGS...]

Connects a Client to DASK_SCHEDULER_ADDRESS and waits until
LEGION_NUM_EXECUTORS workers joined (at most 60 s; then it goes on with
those it has and says so on stderr), closes that client, then runs SCRIPT
as __main__ with sys.argv = [SCRIPT, ARGS...] (runpy.run_path), or execs
COMMAND. The user's code makes its own Client: dask's default address
comes from DASK_SCHEDULER_ADDRESS. The job's files are at /job, on
sys.path, as PYTHONPATH says for the executors, so that functions
defined in the user's modules unpickle there too."""
import os
import runpy
import sys
import time

WAIT_S = 60


def wait_for_executors(address, want):
    """Block until want workers joined the scheduler, or WAIT_S passed."""
    from distributed import Client

    t0 = time.monotonic()
    client = Client(address, timeout=WAIT_S)
    try:
        left = max(1.0, WAIT_S - (time.monotonic() - t0))
        try:
            client.wait_for_workers(want, timeout=left)
        except Exception:  # dask raises its own TimeoutError types across versions
            have = len(client.scheduler_info().get("workers", {}))
            sys.stderr.write("legion: %d of %d executors joined within %d s; going on with them\n"
                             % (have, want, WAIT_S))
    finally:
        client.close()


def main(argv):
    if not argv or argv == ["--exec"]:
        sys.stderr.write("usage: dask-driver SCRIPT [ARGS...] | dask-driver --exec COMMAND [ARGS...]\n")
        return 2
    address = os.environ.get("DASK_SCHEDULER_ADDRESS", "")
    try:
        want = int(os.environ.get("LEGION_NUM_EXECUTORS", "0"))
    except ValueError:
        want = 0
    if address and want > 0:
        wait_for_executors(address, want)
    sys.stdout.flush()
    sys.stderr.flush()
    if argv[0] == "--exec":
        os.execvp(argv[1], argv[1:])
    script = argv[0]
    sys.argv = list(argv)
    for d in (os.path.dirname(os.path.abspath(script)), "/job"):
        if d not in sys.path:
            sys.path.insert(0, d)
    runpy.run_path(script, run_name="__main__")
    return 0
