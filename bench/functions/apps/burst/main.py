"""The burst benchmark's function: answers which instance served it (the
sandbox's hostname is the instance id), after sleeping ?sleep=SECONDS."""
import socket
import time


def main(req):
    s = float(req.query.get("sleep", "0"))
    if s:
        time.sleep(s)
    return {"instance": socket.gethostname()}
