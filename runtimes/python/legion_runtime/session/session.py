"""The session (docs/sessions-runtime.md): one interpreter at a time, one
execution at a time; its timeouts, and the fresh interpreter started when
one dies, times out for good, or is restarted, with the note that says so."""
import os
import threading
import time

from legion_runtime.control import log
from legion_runtime.session.config import CONFIG
from legion_runtime.session.interp import Interpreter, InterpreterError
from legion_runtime.session.procs import LOST, describe_death, kill_everything_else, kill_forked_copies, oom_kills

class Busy(Exception):
    pass


class Session:
    def __init__(self):
        self.lock = threading.Lock()        # one execution (or restart) at a time
        self.interp = None
        self.bound = False
        self.identifier = ""
        self.pool = ""
        self.executions = 0
        self.restarts = 0
        self.executing = False
        self.lost_note = None                # said with the next execution
        self.start_error = None

    def _cwd(self):
        return CONFIG.data_dir if self.bound else "/"

    def start(self):
        """A new interpreter (the old one, if any, is dead or killed).
        Retries for a while: right after a fork bomb is killed, pids may
        still be short."""
        deadline = time.monotonic() + CONFIG.start_timeout
        delay = 0.01
        while True:
            try:
                interp = Interpreter(self._cwd(), self._on_death)
                if self.bound:
                    interp.send({"op": "setup", "n": 0, "env": self._env(), "cwd": CONFIG.data_dir})
                    ok = interp.wait_msg(time.monotonic() + CONFIG.start_timeout)
                    if not isinstance(ok, dict) or ok.get("op") != "ok":
                        interp.kill()
                        raise InterpreterError("the interpreter did not accept its setup")
                self.interp = interp
                self.start_error = None
                return interp
            except (OSError, InterpreterError) as e:
                self.start_error = str(e)
                if time.monotonic() > deadline:
                    self.interp = None
                    raise InterpreterError("cannot start an interpreter: %s" % e)
                log("starting an interpreter failed (%s); retrying" % e)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @staticmethod
    def _env():
        return {k: v for k, v in os.environ.items() if k not in ("LEGION_CONTROL_FD", "LEGION_LISTEN_FD")}

    def bind(self, pool, identifier):
        with self.lock:
            self.pool, self.identifier = pool, identifier
            self.bound = True
            if self.interp is None or self.interp.dead:
                self.start()
                return
            self.interp.send({"op": "setup", "n": 0, "env": self._env(), "cwd": CONFIG.data_dir})
            ok = self.interp.wait_msg(time.monotonic() + CONFIG.start_timeout)
            if not isinstance(ok, dict) or ok.get("op") != "ok":
                self.interp.kill()
                self.start()

    def _on_death(self, interp):
        """From the interpreter's io thread. Outside an execution, start a
        fresh interpreter now and say so with the next execution."""
        if interp.killed or not self.bound:
            return
        if self.executing and self.interp is interp:
            return  # the execution reports it

        def restart():
            with self.lock:
                if self.interp is not interp:
                    return
                why = describe_death(interp.returncode, when="between executions")
                log("%s; starting a fresh one" % why)
                self.lost_note = "%s; %s" % (why, LOST)
                kill_everything_else(interp.pid)
                self.restarts += 1
                try:
                    self.start()
                except InterpreterError as e:
                    log(str(e))

        try:
            threading.Thread(target=restart, daemon=True).start()
        except RuntimeError:
            pass  # no thread now (pids): the next execution restarts it

    def restart(self):
        with self.lock:
            if self.interp is not None:
                self.interp.kill()
            self.restarts += 1
            self.lost_note = None
            self.start()

    def execute(self, code, timeout):
        if not self.lock.acquire(timeout=timeout):
            raise Busy()
        try:
            self.executing = True
            return self._execute(code, timeout)
        finally:
            self.executing = False
            self.lock.release()

    def _execute(self, code, timeout):
        restarted = False
        notes = []
        if self.lost_note:
            notes.append(self.lost_note)
            self.lost_note = None
            restarted = True
        interp = self.interp
        if interp is None or interp.dead:
            if interp is not None and not interp.killed:
                notes.append("%s; %s" % (describe_death(interp.returncode, when="between executions"), LOST))
                kill_everything_else(interp.pid)
            restarted = True
            self.restarts += 1
            self.start()  # InterpreterError -> 503
            interp = self.interp
        self.executions += 1
        n = self.executions  # also the cell's name in tracebacks: <cell N>
        oom_before = oom_kills()
        t0 = time.monotonic()
        try:
            interp.send({"op": "exec", "n": n, "code": code, "timeout": timeout})
        except OSError:
            pass  # it died just now: the wait below says so
        msg = interp.wait_msg(t0 + timeout)
        timed_out = False
        stuck = False
        if msg is None:
            timed_out = True
            interp.interrupt()
            msg = interp.wait_msg(time.monotonic() + CONFIG.kill_grace)
            if msg is None:
                stuck = True
                interp.kill()
                msg = "dead"
        elapsed = (time.monotonic() - t0) * 1000.0
        res = {"status": None, "stdout": "", "stderr": "", "result": None, "error": None,
               "executionTimeMs": round(elapsed, 3), "truncated": {"stdout": False, "stderr": False},
               "interpreterRestarted": False}
        if isinstance(msg, dict) and msg.get("op") == "done":
            (out, out_total), (err, err_total) = interp.take_output(n, 2.0)
            if timed_out:
                # Its forked copies would go on running the cell (a fork
                # bomb): kill them, and have the interpreter reap its own.
                killed = kill_forked_copies(interp.pid)
                if killed:
                    try:
                        interp.send({"op": "reap", "groups": killed})
                        interp.wait_msg(time.monotonic() + 5.0)
                    except OSError:
                        pass
            res["status"] = msg.get("status") or "Failed"
            res["result"] = msg.get("result")
            res["error"] = msg.get("error")
            if msg.get("resultTruncated"):
                res["truncated"]["result"] = True
        else:
            # Dead (by itself, or killed by us because it did not stop).
            if not interp.dead:
                interp.kill()
            (out, out_total), (err, err_total) = interp.take_output(n, 0)
            if stuck:
                res["status"] = "TimedOut"
                what = ("the execution exceeded its timeout of %g s and did not stop within %g s of "
                        "being interrupted (busy in C code, or it ignores KeyboardInterrupt), so the "
                        "interpreter was killed" % (timeout, CONFIG.kill_grace))
                res["error"] = {"type": "TimeoutError", "message": what, "traceback": None}
            else:
                what = describe_death(interp.returncode, oom_before, "during the execution")
                if timed_out:
                    res["status"] = "TimedOut"
                    res["error"] = {"type": "TimeoutError", "message": what, "traceback": None}
                else:
                    res["status"] = "Failed"
                    res["error"] = {"type": "InterpreterDied", "message": what, "traceback": None}
                kill_everything_else(interp.pid)
            notes.append("%s; %s" % (what, LOST))
            restarted = True
            self.restarts += 1
            try:
                self.start()
            except InterpreterError as e:
                notes.append(str(e))
        res["stdout"] = out.decode("utf-8", "replace")
        res["stderr"] = err.decode("utf-8", "replace")
        res["truncated"]["stdout"] = out_total > len(out)
        res["truncated"]["stderr"] = err_total > len(err)
        res["interpreterRestarted"] = restarted
        if notes:
            res["message"] = " ".join(n[:1].upper() + n[1:] + ("" if n.endswith(".") else ".") for n in notes)
        res["execution"] = self.executions
        return res

    def health(self):
        i = self.interp
        state = "running" if i is not None and not i.dead else ("starting" if self.lock.locked() else "dead")
        doc = {"interpreter": state, "executions": self.executions, "restarts": self.restarts,
               "identifier": self.identifier, "pid": i.pid if i is not None else None}
        if state != "running" and self.start_error:
            doc["error"] = self.start_error
        return doc


SESSION = Session()
