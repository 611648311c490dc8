"""Malformed path arguments to trapped calls; prints each errno name. Run natively and in a VM."""

import ctypes
import errno
import mmap
import os

libc = ctypes.CDLL(None, use_errno=True)
O_CREAT_WRONLY = os.O_CREAT | os.O_WRONLY


def attempt(name: str, call) -> None:  # type: ignore[no-untyped-def]
    result = call()
    print(name, "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()])


page = mmap.PAGESIZE
# two pages, the second made inaccessible: a path that runs into it has no NUL
region = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
region.write(b"a" * (2 * page))
base = ctypes.addressof(ctypes.c_char.from_buffer(region))
libc.mprotect(ctypes.c_void_p(base + page), page, 0)
unterminated = ctypes.c_char_p(base + page - 10)
too_long = ("/tmp/" + "d" * 4200).encode()

attempt("null pointer", lambda: libc.open(None, O_CREAT_WRONLY, 0o644))
attempt("wild pointer", lambda: libc.open(ctypes.c_void_p(8), O_CREAT_WRONLY, 0o644))
attempt("runs into unmapped memory", lambda: libc.open(unterminated, O_CREAT_WRONLY, 0o644))
attempt("longer than PATH_MAX", lambda: libc.open(too_long, O_CREAT_WRONLY, 0o644))
attempt("empty path", lambda: libc.open(b"", O_CREAT_WRONLY, 0o644))
attempt("mkdir null", lambda: libc.mkdir(None, 0o755))
attempt("rename bad second", lambda: libc.rename(b"/tmp", ctypes.c_void_p(8)))
attempt("bad dirfd", lambda: libc.openat(9999, b"x", O_CREAT_WRONLY, 0o644))
attempt(
    "dirfd not a directory",
    lambda: libc.openat(1 if os.isatty(1) else os.open("/dev/null", 0), b"x", O_CREAT_WRONLY, 0o644),
)
