"""A pre-imported Dask executor (docs/jobs.md, "Warm pools"): a warm job
sandbox runs this ahead of any job, at a low CPU priority, so that
`distributed` and dask-worker's command are imported before an executor is
needed (0.3 s of CPU each on a small machine: 16 executors importing at
once took 7.6 s to register on 2 cores; pre-imported, 0.6 s).

Once its imports are done it says so on the worker control channel (fd 3,
control.py: `op=ready phase=imported`; the pool counts it ready then) and
waits there for
`op=specialize` from legiond, with the executor's command line after
`dask-worker` (repeated `arg=`), its environment (repeated `env=`, applied
to os.environ; PYTHONPATH entries also go on sys.path, which Python reads
at startup only) and its working directory (`workdir=`), and runs
dask-worker's command in this process with them. Its output goes where
legion-init sends the sandbox's (the role's log). Nothing is sent back
after specialize: the executor's exit is its sandbox's, as for one
started plainly.

    python3 -I /opt/legion/runtime/python dask-executor"""
import os
import sys

from legion_runtime import control


def fail(msg):
    control.log("dask executor: %s" % msg)
    sys.exit(2)


def main(t_start):
    ctl = control.Control.from_env()
    # The cost paid ahead (the point of this worker).
    import distributed  # noqa: F401
    from distributed.cli import dask_worker

    # Only now is it worth taking (the pool counts it ready).
    ctl.send("ready", phase="imported", ms="%.1f" % control.now_ms(t_start))
    frame = control.wait_for_specialize(ctl)
    frame.close_fds()
    try:
        control.apply_env(frame)
    except control.SpecializeError as e:
        fail(e.message)
    for p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    # Dask read its configuration (DASK_* variables, ~/.config/dask) when
    # it was imported, before this environment: read again, as a
    # dask-worker started now would have (distributed's defaults stay).
    import dask

    dask.config.refresh()
    workdir = frame.get("workdir") or "/"
    try:
        os.chdir(workdir)
    except OSError as e:
        fail("working directory %s: %s" % (workdir, e.strerror))
    # The channel is done with: nothing the executor runs may use it.
    ctl.sock.close()
    sys.argv = ["dask-worker"] + frame.getall("arg")
    dask_worker.main()
