"""The `session` runtime (docs/sessions-runtime.md): supervisor.py is the
worker; interpreter.py is the child process that runs the session's code
(a script of its own, run by path: the user's code sees nothing of this
package on its sys.path)."""
