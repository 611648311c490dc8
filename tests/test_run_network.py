"""``hvfs run --network NAME``: VMs of several runs on one network reach each other by
name, and nothing else (another network, the host, the outside)."""

from __future__ import annotations

import os
import subprocess
import time

from tests.conftest import Hvfs
from tests.detached import names, new_name  # noqa: F401

SERVER = (
    "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 7000))\ns.listen()\nopen('/tmp/ready', 'w').close()\n"
    "while True:\n c, peer = s.accept()\n c.sendall(b'hello ' + peer[0].encode())\n c.close()"
)
CLIENT = (
    "import socket, sys\ntry:\n c = socket.create_connection((sys.argv[1], 7000), timeout=3)\n"
    " print(c.recv(100).decode())\nexcept OSError as e:\n print(type(e).__name__)"
)


def _hosts(hvfs: Hvfs, vm: str) -> dict[str, str]:
    lines = hvfs.ok("exec", vm, "--", "cat", "/etc/hosts").splitlines()
    return {line.split()[1]: line.split()[0] for line in lines if line.split()[0] not in ("127.0.0.1", "::1")}


def test_vms_of_one_network_reach_each_other_by_name_and_no_one_else(hvfs: Hvfs, names: list[str]) -> None:
    net, other = f"net{os.getpid()}", f"other{os.getpid()}"
    server, peer, stranger = new_name(names, "srv"), new_name(names, "peer"), new_name(names, "stranger")
    hvfs.ok("run", "-d", "--name", server, "--network", net, "--", "python3", "-c", SERVER)
    deadline = time.monotonic() + 20
    while hvfs.run("exec", server, "--", "test", "-e", "/tmp/ready").returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    hvfs.ok("run", "-d", "--name", peer, "--network", net, "--", "sleep", "120")
    hvfs.ok("run", "-d", "--name", stranger, "--network", other, "--", "sleep", "120")
    # The first VM's /etc/hosts was rewritten when the second joined: it sees it by name.
    hosts = _hosts(hvfs, server)
    assert set(hosts) == {server, peer} and _hosts(hvfs, peer) == hosts
    address = hosts[server]
    reply = hvfs.ok("exec", peer, "--", "python3", "-c", CLIENT, server).strip()
    assert reply == f"hello {hosts[peer]}"  # by name, from the peer's own address on the network
    # Another network: neither the name nor the address reaches it.
    assert server not in _hosts(hvfs, stranger)
    assert hvfs.ok("exec", stranger, "--", "python3", "-c", CLIENT, server).strip() == "gaierror"
    assert hvfs.ok("exec", stranger, "--", "python3", "-c", CLIENT, address).strip() in (
        "OSError", "TimeoutError", "ConnectionRefusedError",
    )  # fmt: skip
    # A VM of no network, and the outside: nothing.
    assert hvfs.ok("run", "--", "python3", "-c", CLIENT, address).strip() == "OSError"  # no route
    host_ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for ip in [a for a in host_ips if ":" not in a][:2]:
        assert hvfs.ok("exec", peer, "--", "python3", "-c", CLIENT, ip).strip() == "OSError"  # no route out
    # A VM that leaves goes out of the others' /etc/hosts.
    hvfs.ok("rm", "-f", peer)
    assert set(_hosts(hvfs, server)) == {server}


def test_a_network_rootless(rootless: Hvfs) -> None:
    net, server = f"rl{os.getpid()}", f"rl-srv-{os.getpid()}"
    rootless.ok("run", "-d", "--name", server, "--network", net, "--", "python3", "-c", SERVER)
    try:
        deadline = time.monotonic() + 20
        while rootless.run("exec", server, "--", "test", "-e", "/tmp/ready").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        reply = rootless.ok("run", "--network", net, "--", "python3", "-c", CLIENT, server).strip()
        assert reply.startswith("hello 10.90.")
    finally:
        rootless.run("rm", "-f", server)
