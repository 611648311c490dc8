"""A small TCP echo service on port 7000, so that VMs can reach each other by name.

``serve.py DATABASE`` also holds the database open while it runs (see db.py: a read-only
VM can read it only while a writer keeps its -wal and -shm).
"""

import socketserver
import sys

from db import open_for_writing


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


held = [open_for_writing(path) for path in sys.argv[1:]]
socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("0.0.0.0", 7000), Echo) as server:
    print("echo service on port 7000", flush=True)
    server.serve_forever()
