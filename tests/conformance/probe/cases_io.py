"""I/O on fds: fallocate(2), copy_file_range(2), sendfile(2), read and write; flock(2),
POSIX record locks and open file description locks; mmap(2)."""

import fcntl
import mmap
import os

from observe import Json, listing, read, write
from processes import in_child
from runner import Case, case
from system import (
    CREAT,
    F_OFD_GETLK,
    F_OFD_SETLK,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    RDONLY,
    RDWR,
    WRONLY,
    check,
    fallocate,
    libc,
    lock,
)

# -- fd I/O: fallocate, copy_file_range, sendfile, read and write ---------------------------------


@case
def io_fallocate(c: Case) -> Json:
    c.stat_after("f")
    fallocate(c.open("f", RDWR | CREAT), 0, 0, 8192)


@case
def io_fallocate_keep_size(c: Case) -> Json:
    write("f", "abc")
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_KEEP_SIZE, 0, 8192)


@case
def io_fallocate_punch_hole(c: Case) -> Json:
    write("f", "a" * 8192)
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
    return read("f").count("\0")


@case
def io_fallocate_zero_range(c: Case) -> Json:
    write("f", "a" * 8192)
    c.stat_after("f")
    fallocate(c.open("f", RDWR), FALLOC_FL_ZERO_RANGE, 4096, 8192)
    return read("f").count("\0")


@case
def io_fallocate_punch_without_keep_size(c: Case) -> Json:
    write("f", "a" * 8192)
    fallocate(c.open("f", RDWR), FALLOC_FL_PUNCH_HOLE, 0, 4096)


@case
def io_fallocate_rdonly_fd(c: Case) -> Json:
    write("f")
    fallocate(c.open("f", RDONLY), 0, 0, 4096)


@case
def io_fallocate_negative_length(c: Case) -> Json:
    write("f")
    fallocate(c.open("f", RDWR), 0, 0, -1)


@case
def io_posix_fallocate(c: Case) -> Json:
    c.stat_after("f")
    os.posix_fallocate(c.open("f", RDWR | CREAT), 0, 5000)


@case
def io_copy_file_range(c: Case) -> Json:
    write("src", "hello world")
    count = os.copy_file_range(c.open("src", RDONLY), c.open("dst", WRONLY | CREAT), 100)
    return {"count": count, "dst": read("dst")}


@case
def io_copy_file_range_offsets(c: Case) -> Json:
    write("src", "hello world")
    write("dst", "0123456789")
    count = os.copy_file_range(c.open("src", RDONLY), c.open("dst", WRONLY), 5, 6, 2)
    return {"count": count, "dst": read("dst")}


@case
def io_copy_file_range_overlap(c: Case) -> Json:
    write("f", "0123456789")
    fd = c.open("f", RDWR)
    os.copy_file_range(fd, fd, 5, 0, 2)


@case
def io_copy_file_range_rdonly_destination(c: Case) -> Json:
    write("src", "hello")
    write("dst")
    os.copy_file_range(c.open("src", RDONLY), c.open("dst", RDONLY), 5)


@case
def io_sendfile(c: Case) -> Json:
    write("src", "hello world")
    count = os.sendfile(c.open("dst", WRONLY | CREAT), c.open("src", RDONLY), 6, 100)
    return {"count": count, "dst": read("dst")}


@case
def io_pwrite_pread(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.pwrite(fd, b"xyz", 4)
    return os.pread(fd, 10, 0).hex()


@case
def io_append_pwrite(c: Case) -> Json:
    # Linux ignores pwrite's offset on an O_APPEND fd
    write("f", "ab")
    os.pwrite(c.open("f", WRONLY | os.O_APPEND), b"cd", 0)
    return read("f")


@case
def io_write_rdonly_fd(c: Case) -> Json:
    write("f")
    os.write(c.open("f", RDONLY), b"x")


@case
def io_read_dir(c: Case) -> Json:
    os.mkdir("d")
    os.read(c.open("d", RDONLY), 10)


@case
def io_write_after_unlink(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.unlink("f")
    os.write(fd, b"orphan")
    return {"read": os.pread(fd, 10, 0).decode(), "listing": listing()}


@case
def io_seek_data_hole(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.ftruncate(fd, 1 << 20)
    os.pwrite(fd, b"x", 1 << 19)
    # a file system may report no holes at all, but the same one must answer the same
    return {"data": os.lseek(fd, 0, os.SEEK_DATA), "end": os.lseek(fd, 0, os.SEEK_END)}


# -- locks: flock, POSIX record locks, open file description locks --------------------------------


@case
def lock_flock_conflict(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_shared_shared(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)


@case
def lock_flock_shared_then_exclusive(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_SH)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_dup_shares_lock(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fcntl.flock(c.keep(os.dup(fd)), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_after_unlock(c: Case) -> Json:
    write("f")
    first = c.open("f", RDONLY)
    fcntl.flock(first, fcntl.LOCK_EX)
    fcntl.flock(first, fcntl.LOCK_UN)
    fcntl.flock(c.open("f", RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)


@case
def lock_flock_independent_of_posix(c: Case) -> Json:
    write("f")
    fcntl.flock(c.open("f", RDWR), fcntl.LOCK_EX)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_flock_bad_operation(c: Case) -> Json:
    write("f")
    check(libc.flock(c.open("f", RDONLY), 0))


@case
def lock_posix_same_process(c: Case) -> Json:
    # POSIX locks belong to the process: two fds of one process never conflict
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_posix_child_conflict(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    return in_child(lambda: lock(os.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK))


@case
def lock_posix_child_getlk(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)

    def probe_lock() -> Json:
        found = lock(os.open("f", RDWR), fcntl.F_GETLK, fcntl.F_RDLCK)
        found["pid"] = found["pid"] == os.getppid()  # which process holds it, without its number
        return found

    return in_child(probe_lock)


@case
def lock_posix_released_by_any_close(c: Case) -> Json:
    # closing any fd of the file drops the process's POSIX locks on it
    write("f")
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)
    os.close(os.open("f", RDONLY))
    return in_child(lambda: lock(os.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK))


@case
def lock_posix_write_lock_on_rdonly_fd(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDONLY), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_conflict(c: Case) -> Json:
    # OFD locks belong to the open file description: two opens conflict within one process
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_same_description(c: Case) -> Json:
    write("f")
    fd = c.open("f", RDWR)
    lock(fd, F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.keep(os.dup(fd)), F_OFD_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_read_read(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDONLY), F_OFD_SETLK, fcntl.F_RDLCK)
    lock(c.open("f", RDONLY), F_OFD_SETLK, fcntl.F_RDLCK)


@case
def lock_ofd_against_posix(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    lock(c.open("f", RDWR), fcntl.F_SETLK, fcntl.F_WRLCK)


@case
def lock_ofd_getlk(c: Case) -> Json:
    # the holder of an OFD lock is reported as pid -1
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK)
    return lock(c.open("f", RDWR), F_OFD_GETLK, fcntl.F_RDLCK)


@case
def lock_ofd_nonzero_pid(c: Case) -> Json:
    write("f")
    lock(c.open("f", RDWR), F_OFD_SETLK, fcntl.F_WRLCK, pid=1)


# -- mmap --------------------------------------------------------------------------------------


@case
def mmap_shared_write_read_back(c: Case) -> Json:
    write("f", "." * 4096)
    fd = c.open("f", RDWR)
    with mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[:5] = b"hello"
        # no msync: a shared mapping and read() see the same page cache
        through_fd = os.pread(fd, 8, 0).decode()
    return {"read": through_fd, "other open": read("f")[:8]}


@case
def mmap_private_write_hidden(c: Case) -> Json:
    write("f", "." * 4096)
    fd = c.open("f", RDWR)
    with mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[:5] = b"hello"
        return {"mapping": region[:8].decode(), "read": os.pread(fd, 8, 0).decode()}


@case
def mmap_shared_write_rdonly_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", RDONLY), 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()


@case
def mmap_private_write_rdonly_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", RDONLY), 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE).close()


@case
def mmap_extend_then_map(c: Case) -> Json:
    fd = c.open("f", RDWR | CREAT)
    os.ftruncate(fd, 4096)
    with mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as region:
        region[4090:4096] = b"at end"
    data = read("f")
    return {"size": len(data), "tail": data[-6:]}


@case
def mmap_path_fd(c: Case) -> Json:
    write("f", "." * 4096)
    mmap.mmap(c.open("f", os.O_PATH), 4096, mmap.MAP_SHARED, mmap.PROT_READ).close()
