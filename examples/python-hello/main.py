"""Hello world for the Legion Python runtime (entrypoint `main:main`)."""
import os


def main(req):
    name = req.query.get("name", "world")
    if req.method == "POST" and req.body:
        data = req.json() or {}
        name = data.get("name", name)
    return {
        "status": 200,
        "headers": {"X-Powered-By": "legion"},
        "body": {"message": "%s, %s!" % (os.environ.get("GREETING", "Hello"), name)},
    }
