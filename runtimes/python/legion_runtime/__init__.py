"""Legion's in-sandbox runtimes (docs/runtimes.md): the workers that
legion-init starts in placeholder sandboxes, and what they share.

    control        the worker side of the control channel (fd 3)
    serving        the accept loop and the loop over a connection's requests
    httpd          HTTP/1.1: request heads, bodies, response heads
    python_worker  the `python` runtime: a module:function handler
    custom_worker  the `custom` runtime: relays to a command's port
    session        the `session` runtime: the supervisor of a session

Started as `python3 -I /opt/legion/runtime/python WORKER` (../__main__.py);
-I leaves the user's site and environment out, and running the directory
puts it, and so this package, first on sys.path. Standard library only:
the sandbox sees the host's /usr and nothing else. Importing the package
imports none of its modules: each worker takes only what it uses."""
