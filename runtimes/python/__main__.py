"""Start one of Legion's in-sandbox workers (docs/runtimes.md):

    python3 -I /opt/legion/runtime/python python|custom|session|dask-executor
    python3 /opt/legion/runtime/python dask-driver SCRIPT|--exec COMMAND [ARGS...]

Running this directory puts it first on sys.path, so the workers import
the legion_runtime package next to this file like any other. Each worker
imports only its own modules: cold starts pay for nothing else."""
import time

T_START = time.monotonic()

import sys  # noqa: E402

WORKERS = ("python", "custom", "session", "dask-executor")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "dask-driver":
        # A dask job's driver (dask_driver.py): not -I, the job's
        # PYTHONPATH counts.
        from legion_runtime import dask_driver

        sys.exit(dask_driver.main(sys.argv[2:]))
    which = sys.argv[1] if len(sys.argv) == 2 else None
    if which == "python":
        from legion_runtime import python_worker as worker
    elif which == "custom":
        from legion_runtime import custom_worker as worker
    elif which == "session":
        from legion_runtime.session import supervisor as worker
    elif which == "dask-executor":
        from legion_runtime import dask_executor as worker
    else:
        sys.stderr.write("usage: python3 -I %s %s\n" % (sys.argv[0], "|".join(WORKERS)))
        sys.exit(2)
    worker.main(T_START)


# Not when multiprocessing's spawn runs this file again as __mp_main__ in a
# child of the user's code.
if __name__ == "__main__":
    main()
