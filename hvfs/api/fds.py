"""The two roles of an fd in a message of the HVFS API (hvfs.api.messages), which every
transport honours alike (the wire format passes fds by SCM_RIGHTS and relies on these
annotations):

- ``LentFd``: the sender keeps it. A request's open files (``OpenFile.fd``, the control
  messages' passed files included) stay the driver's: the manager uses them while it
  handles the request, and neither closes nor keeps them (it duplicates what it must
  keep). A response may name one of them again (``WouldBlock.fd``, the files of
  ``WouldBlock.again``), and nothing else: it lends them back, and they stay the driver's.
- ``GivenFd``: ownership passes to the receiver with the message (``Fd.fd``, an open file
  for the caller); the driver closes it once installed.
"""

from __future__ import annotations

import enum
from typing import Annotated


class FdRole(enum.Enum):
    LENT = "lent"
    GIVEN = "given"


LentFd = Annotated[int, FdRole.LENT]
GivenFd = Annotated[int, FdRole.GIVEN]
