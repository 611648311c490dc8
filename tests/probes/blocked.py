"""Calls that would get around the manager; prints each one's result and errno name."""

import ctypes
import errno
import platform

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
X86_64 = {
    "mount": 165,
    "unshare": 272,
    "io_uring_setup": 425,
    "open_by_handle_at": 304,
    "clone3": 435,
    "setns": 308,
    "bpf": 321,
    "chroot": 161,
    "pivot_root": 155,
    "fsopen": 430,
    "userfaultfd": 323,
}
AARCH64 = {
    "mount": 40,
    "unshare": 97,
    "io_uring_setup": 425,
    "open_by_handle_at": 265,
    "clone3": 435,
    "setns": 268,
    "bpf": 280,
    "chroot": 51,
    "pivot_root": 41,
    "fsopen": 430,
    "userfaultfd": 282,
}
numbers = X86_64 if platform.machine() == "x86_64" else AARCH64
calls = {
    "mount": (b"none", b"/tmp", b"tmpfs", 0, None),
    "unshare": (0x10000000,),
    "io_uring_setup": (1, None),
    "open_by_handle_at": (0, None, 0),
    "clone3": (None, 0),
    "setns": (0, 0),
    "bpf": (0, None, 0),
    "chroot": (b"/",),
    "pivot_root": (b"/", b"/"),
    "fsopen": (b"tmpfs", 0),
    "userfaultfd": (0,),
}
for name, args in calls.items():
    result = libc.syscall(ctypes.c_long(numbers[name]), *args)
    print(name, result, errno.errorcode.get(ctypes.get_errno(), "?") if result < 0 else "-")
result = libc.syscall(ctypes.c_long(9999))
print("unknown", result, errno.errorcode.get(ctypes.get_errno(), "?"))
