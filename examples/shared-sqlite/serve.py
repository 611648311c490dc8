"""A small TCP echo service on port 7000, so that VMs can reach each other by name."""

import socketserver


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("0.0.0.0", 7000), Echo) as server:
    print("echo service on port 7000", flush=True)
    server.serve_forever()
