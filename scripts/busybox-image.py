#!/usr/bin/python3
"""Write a small OCI image archive of Debian's busybox-static (for `make run`
and the examples): scripts/busybox-image.py OUT.tar [NAME]."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import oci_kit  # noqa: E402

if len(sys.argv) not in (2, 3):
    sys.exit("usage: busybox-image.py OUT.tar [NAME]")
img = oci_kit.Image([oci_kit.busybox_layer()], config={"Cmd": ["/bin/sh"], "WorkingDir": "/"})
oci_kit.write_oci_archive(sys.argv[1], img, sys.argv[2] if len(sys.argv) == 3 else None)
