"""The kernel's ABI as HVFS uses it: flags, limits and structure layouts, each defined here once.

The filter tests these flags in a syscall's registers, the decoders read these structures
from a VM's memory, and the manager hands the same flags back to the kernel: one value
for all three, so that they can never disagree. Values are those of 64-bit Linux on
x86_64 and aarch64, which agree on every one (the asm-generic ones; the O_* bits that do
differ between the two, O_DIRECTORY and its neighbours, are not defined here: code
running on the host takes those from ``os``, and nothing tests them in a filter).

A constant that names no kernel interface (a limit HVFS chooses) belongs with the code
that chooses it; a constant only one wrapper of ``hvfs._sys`` passes to its one call
(mount flags, ioctl numbers, prctl options) stays beside that call.
``tests/test_abi.py`` checks that nothing else in the package defines these names again,
and that the decoders spell no flag as a bare number.

Leaf module: it imports nothing of HVFS, so the manager, the driver and ``_sys`` all may.
"""

from __future__ import annotations

import struct

# Open flags (include/uapi/asm-generic/fcntl.h).
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000
O_PATH = 0o10000000
TMPFILE_BIT = 0o20000000  # __O_TMPFILE: O_TMPFILE without the O_DIRECTORY it always carries

# *at() flags (include/uapi/linux/fcntl.h).
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EACCESS = 0x200  # faccessat: the effective ids
AT_REMOVEDIR = 0x200  # unlinkat: the same bit, another call
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_STATX_SYNC_TYPE = 0x6000
AT_RECURSIVE = 0x8000

# renameat2's flags (include/uapi/linux/fs.h).
RENAME_NOREPLACE = 0x1
RENAME_EXCHANGE = 0x2
RENAME_WHITEOUT = 0x4

# openat2's struct open_how and its resolve flags (include/uapi/linux/openat2.h).
OPEN_HOW = struct.Struct("<QQQ")  # flags, mode, resolve: OPEN_HOW_SIZE_VER0, 24 bytes
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

# statx (include/uapi/linux/stat.h): its 256-byte struct statx is the same on every arch.
STATX_MNT_ID = 0x1000
STATX__RESERVED = 0x80000000
STATX_STRUCT_SIZE = 256
STX_MNT_ID_OFFSET = 0x90

# struct statfs on 64-bit Linux (the same on x86_64 and aarch64): f_type, f_bsize, f_blocks,
# f_bfree, f_bavail, f_files, f_ffree, f_fsid, f_namelen, f_frsize, f_flags, f_spare[4].
STATFS = struct.Struct("<qqQQQQQ8sqqq32s")
STATFS_SIZE = STATFS.size  # 120

# Extended attributes (include/uapi/linux/xattr.h): setxattr's flags, and the struct
# xattr_args of setxattrat and getxattrat (value, size, flags: XATTR_ARGS_SIZE_VER0, 16 bytes).
XATTR_CREATE = 0x1
XATTR_REPLACE = 0x2
XATTR_ARGS = struct.Struct("<QII")

# Times: utimensat's struct timespec[2], utimes' struct timeval[2], utime's struct utimbuf.
TIMESPEC_PAIR = struct.Struct("<qqqq")
TIMEVAL_PAIR = struct.Struct("<qqqq")
UTIMBUF = struct.Struct("<qq")
USEC_PER_SEC = 1_000_000
NSEC_PER_USEC = 1000

# Limits (include/uapi/linux/limits.h, xattr.h).
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
S_IALLUGO = 0o7777  # the permission bits and set-id/sticky bits of a mode
W_OK = 0o2
S_IRWXO = 0o7  # access(2)'s mode: R_OK | W_OK | X_OK

# Register widths: an int, unsigned int, uid_t or gid_t argument is the low 32 bits.
U32_MASK = 0xFFFFFFFF
INT_MAX = 0x7FFFFFFF
SIGN64 = 1 << 63  # the sign bit of a 64-bit register: a negative loff_t, or a size_t too big for ssize_t

# Namespaces (include/uapi/linux/sched.h).
CLONE_NEWTIME = 0x00000080  # in clone() this bit is part of the exit signal, in unshare() a flag
CLONE_FS = 0x00000200
CLONE_FILES = 0x00000400
CLONE_THREAD = 0x00010000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# posix_spawn (glibc's spawn.h): attribute flags, and the sizes of its opaque types on
# 64-bit glibc (file actions 80 bytes, attributes 336, sigset_t 128), rounded up.
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSID = 0x80
POSIX_SPAWN_ACTIONS_SIZE = 128
POSIX_SPAWN_ATTR_SIZE = 512
SIGSET_SIZE = 128

# Capabilities (include/uapi/linux/capability.h).
CAP_SETGID = 6
CAP_SETUID = 7

# Sockets (include/linux/socket.h, include/uapi/asm-generic/socket.h).
AF_UNIX = 1
SA_FAMILY = struct.Struct("<H")  # sa_family_t, the start of every sockaddr
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOL_SOCKET = 1
SO_TYPE = 3
SO_ERROR = 4
SO_DOMAIN = 39
SCM_RIGHTS = 1
SCM_CREDENTIALS = 2
SCM_MAX_FD = 253  # fds one SCM_RIGHTS message may pass
MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000
MSG_FASTOPEN = 0x20000000
SOCKADDR_UN_SIZE = 110  # sun_family and a 108-byte sun_path
SOCKADDR_STORAGE_SIZE = 128  # the most the kernel copies of any address
UIO_MAXIOV = 1024
MAX_RW_COUNT = 0x7FFFF000  # what one call transfers at most (INT_MAX, page-aligned)
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # struct msghdr: name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_LEN_OFFSET = MSGHDR.size  # struct mmsghdr: a msghdr, then unsigned int msg_len
MSG_LEN = struct.Struct("<I")
IOVEC = struct.Struct("<QQ")  # struct iovec: base, length
CMSGHDR = struct.Struct("<Qii")  # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type
CMSG_ALIGN = 8  # control messages start at multiples of sizeof(long)
UCRED = struct.Struct("<iII")  # struct ucred: pid, uid, gid
FD_NUMBER = struct.Struct("<i")  # one fd of an SCM_RIGHTS message

# prctl options that never change the caller's credentials (credcache forgets them on
# any other): PDEATHSIG, DUMPABLE, GET_KEEPCAPS, NAME, CAPBSET_READ, GET_SECUREBITS,
# TIMERSLACK, CHILD_SUBREAPER, NO_NEW_PRIVS, SET_VMA.
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_GET_KEEPCAPS = 1, 2, 3, 4, 7
PR_SET_NAME, PR_GET_NAME, PR_CAPBSET_READ, PR_GET_SECUREBITS, PR_SET_TIMERSLACK = 15, 16, 23, 27, 29
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 36, 37, 38, 39
PR_SET_VMA = 0x53564D41
PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 8, 24, 28  # options that do change them
PRCTL_KEEPS_CREDENTIALS = frozenset({
    PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_GET_KEEPCAPS, PR_SET_NAME,
    PR_GET_NAME, PR_CAPBSET_READ, PR_GET_SECUREBITS, PR_SET_TIMERSLACK, PR_SET_CHILD_SUBREAPER,
    PR_GET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_SET_VMA,
})  # fmt: skip
