"""Fakes for testing HVFS without a VM or privileges, as ``trio.testing`` is for trio.

- ``MockTransport``: a Transport calling a function, holding it to the fd rules;
- ``FakeTracee``, ``FakeMemory``, ``notification``, ``decode``, ``decode_call``: a
  notifying thread made of test data, and notifications decoded as the driver does;
- ``directory_vm``, ``directory_manager``, ``caller``: manager handlers on a real
  temporary directory tree.
"""

from hvfs.testing.manager import caller, directory_manager, directory_vm
from hvfs.testing.memory import PAGE, FakeMemory
from hvfs.testing.notifications import FakeNotification, decode, decode_call, notification
from hvfs.testing.tracee import USER, FakeTracee, own_credentials, status_text
from hvfs.testing.transport import MockTransport

__all__ = [
    "PAGE",
    "USER",
    "FakeMemory",
    "FakeNotification",
    "FakeTracee",
    "MockTransport",
    "caller",
    "decode",
    "decode_call",
    "directory_manager",
    "directory_vm",
    "notification",
    "own_credentials",
    "status_text",
]
