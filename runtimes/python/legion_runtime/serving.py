"""Serving a listening socket in the in-sandbox workers (docs/runtimes.md):
the accept loop, a thread per connection, and the loop over the requests of
one connection. The Python worker and the session supervisor serve HTTP
(httpd.py) this way; the custom worker relays each connection's bytes."""
import threading
import time

from legion_runtime.control import log

# accept() errors that pass (out of descriptors or memory for now): wait a
# little and accept again instead of giving up serving.
_TRANSIENT = (24, 23, 105, 12)  # EMFILE ENFILE ENOBUFS ENOMEM


def accept_loop(listener, handle, stopping=lambda: False):
    """Accept connections until the listener fails (or is shut down while
    stopping() says so), each served by handle(sock) on a thread of its
    own. With no thread to be had (the sandbox's pids are used up) the
    connection is served here; the others wait."""
    while True:
        try:
            sock, _ = listener.accept()
        except InterruptedError:
            continue
        except OSError as e:
            if stopping():
                return
            if e.errno in _TRANSIENT:
                log("accept: %s" % e)
                time.sleep(0.05)
                continue
            log("accept: %s; not serving any more" % e)
            return
        try:
            threading.Thread(target=handle, args=(sock,), daemon=True).start()
        except RuntimeError:
            handle(sock)


def serve_connection(sock, one):
    """Requests on one connection: one(rfile) answers the next and says
    whether the connection stays open. Closes the socket at the end."""
    rfile = sock.makefile("rb", 65536)
    try:
        while one(rfile):
            pass
    except (OSError, ValueError):
        pass
    finally:
        try:
            rfile.close()
            sock.close()
        except OSError:
            pass
