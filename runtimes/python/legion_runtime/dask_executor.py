"""A pre-imported Dask process (docs/jobs.md, "Warm pools"): a warm job
sandbox of a `dask-executor` pool runs this ahead of any job, at a low CPU
priority, so that `distributed`, dask-worker's and dask-scheduler's
commands, dask.array, dask.bag and numpy are imported before a job needs
them (0.4 s of CPU each on a small machine: 16 executors importing at
once took 3-8 s to register on 2 cores; pre-imported, 0.35 s).

Once its imports are done it says so on the worker control channel (fd 3,
control.py: `op=ready phase=imported`; the pool counts it ready then) and
waits there for `op=specialize` from legiond, with what to run (`run=`):

    worker     dask-worker ARGS          (an executor)
    scheduler  dask-scheduler ARGS       (a master)
    driver     dask-driver ARGS          (dask_driver.py: a job's driver)

ARGS as repeated `arg=`, the environment (repeated `env=`, applied to
os.environ; PYTHONPATH entries also go on sys.path, which Python reads
at startup only; Dask's configuration is read again) and the working
directory (`workdir=`); it runs that in this process. Its output goes
where legion-init sends the sandbox's (the role's log). Nothing is sent
back after specialize: the role's exit is its sandbox's, as for one
started plainly.

    python3 -I /opt/legion/runtime/python dask-executor"""
import os
import sys

from legion_runtime import control

RUNS = ("worker", "scheduler", "driver")


def fail(msg):
    control.log("dask executor: %s" % msg)
    sys.exit(2)


def main(t_start):
    ctl = control.Control.from_env()
    # The cost paid ahead (the point of this worker); what a job's tasks
    # import first comes too.
    import distributed  # noqa: F401
    import dask.array  # noqa: F401
    import dask.bag  # noqa: F401
    from distributed.cli import dask_scheduler, dask_worker

    from legion_runtime import dask_driver

    # Only now is it worth taking (the pool counts it ready).
    ctl.send("ready", phase="imported", ms="%.1f" % control.now_ms(t_start))
    frame = control.wait_for_specialize(ctl)
    frame.close_fds()
    run = frame.get("run") or "worker"
    if run not in RUNS:
        fail("run `%s`: want one of %s" % (run, ", ".join(RUNS)))
    try:
        control.apply_env(frame)
    except control.SpecializeError as e:
        fail(e.message)
    for p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    # Dask read its configuration (DASK_* variables, ~/.config/dask) when
    # it was imported, before this environment: read again, as a process
    # started now would have (distributed's defaults stay).
    import dask

    dask.config.refresh()
    workdir = frame.get("workdir") or "/"
    try:
        os.chdir(workdir)
    except OSError as e:
        fail("working directory %s: %s" % (workdir, e.strerror))
    # The channel is done with: nothing the role runs may use it.
    ctl.sock.close()
    args = frame.getall("arg")
    if run == "driver":
        sys.argv = [sys.argv[0], "dask-driver"] + args
        sys.exit(dask_driver.main(args))
    sys.argv = ["dask-" + run] + args
    (dask_worker if run == "worker" else dask_scheduler).main()
