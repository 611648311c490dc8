"""A request that holds a VM's receiver is taken over (hvfs.intercept.watchdog, one thread
for every driver of the manager): the VM's other calls are served meanwhile, in two VMs
held at once, though each driver starts one worker and the others only as requests block."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import Hvfs

# Thread A opens the held file; the main thread, once A's open is in the manager, opens
# another and notes whether A was still held then.
PROGRAM = """
import json, threading, time
state = {}
def held():
    open("/data/held").close()
    state["held_done"] = True
a = threading.Thread(target=held)
a.start()
time.sleep(0.3)
open("/data/free").close()
state["free_while_held"] = a.is_alive() and "held_done" not in state
a.join()
print(json.dumps(state))
"""


def test_a_held_request_is_taken_over_in_two_vms_at_once(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "held").write_text("h")
    (tmp_path / "free").write_text("f")
    command = [*hvfs.command, "run", "--fault", "op=open,path=/data/held,delay=2s", "-v", f"{tmp_path}:/data:ro",
               "--", "python3", "-c", PROGRAM]  # fmt: skip
    clients = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [client.communicate(timeout=60) for client in clients]
    for client, (out, err) in zip(clients, results, strict=True):
        assert client.returncode == 0, err
        assert json.loads(out) == {"held_done": True, "free_while_held": True}
