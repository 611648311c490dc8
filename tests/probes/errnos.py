"""File operations that fail (and a few that succeed) in the directory given as argv[1];
prints each case's result as JSON: "ok" or the errno name, with a detail when useful."""

import ctypes
import errno
import json
import os
import sys

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: str, new: str, flags: int) -> None:
    if libc.renameat2(-100, old.encode(), -100, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def write(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def setup() -> None:
    os.mkdir("dir")
    write("dir/inner", "x")
    os.mkdir("empty")
    write("file", "content")
    write("other", "other")
    os.symlink("file", "link")
    os.symlink("nowhere", "dangling")
    os.symlink("loop", "loop")


CASES = {
    "open missing": lambda: os.open("missing", os.O_RDONLY),
    "create in missing dir": lambda: os.open("missing/x", os.O_CREAT | os.O_WRONLY, 0o644),
    "create through a file": lambda: os.open("file/x", os.O_CREAT | os.O_WRONLY, 0o644),
    "create excl existing": lambda: os.open("file", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
    "create excl dangling": lambda: os.open("dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
    "write-open a dir": lambda: os.open("dir", os.O_WRONLY),
    "O_DIRECTORY on a file": lambda: os.open("file", os.O_DIRECTORY | os.O_RDWR),
    "O_NOFOLLOW on a symlink": lambda: os.open("link", os.O_WRONLY | os.O_NOFOLLOW),
    "open a symlink loop": lambda: os.open("loop", os.O_WRONLY),
    "name too long": lambda: os.open("n" * 300, os.O_CREAT | os.O_WRONLY, 0o644),
    "mkdir existing dir": lambda: os.mkdir("dir"),
    "mkdir existing file": lambda: os.mkdir("file"),
    "mkdir empty name": lambda: os.mkdir(""),
    "mkdir in missing": lambda: os.mkdir("missing/sub"),
    "rmdir non-empty": lambda: os.rmdir("dir"),
    "rmdir a file": lambda: os.rmdir("file"),
    "rmdir dot": lambda: os.rmdir("empty/."),
    "rmdir missing": lambda: os.rmdir("missing"),
    "unlink a dir": lambda: os.unlink("dir"),
    "unlink missing": lambda: os.unlink("missing"),
    "unlink trailing slash": lambda: os.unlink("file/"),
    "rename file over non-empty dir": lambda: os.rename("file", "dir"),
    "rename dir over file": lambda: os.rename("empty", "file"),
    "rename dir into itself": lambda: os.rename("dir", "dir/sub"),
    "rename missing": lambda: os.rename("missing", "x"),
    "rename noreplace existing": lambda: renameat2("file", "other", RENAME_NOREPLACE),
    "link a dir": lambda: os.link("dir", "dirlink"),
    "link onto existing": lambda: os.link("file", "other"),
    "link missing": lambda: os.link("missing", "x"),
    "symlink onto existing": lambda: os.symlink("x", "file"),
    "chmod missing": lambda: os.chmod("missing", 0o644),
    "chown missing": lambda: os.chown("missing", 0, 0),
    "truncate a dir": lambda: os.truncate("dir", 0),
    "truncate negative": lambda: os.truncate("file", -1),
    "truncate missing": lambda: os.truncate("missing", 0),
    "utime missing": lambda: os.utime("missing", (1, 1)),
    "mknod existing": lambda: os.mknod("file", 0o600 | 0o010000),
}


def successes() -> dict[str, str]:
    results = {}
    os.close(os.open("dangling", os.O_CREAT | os.O_WRONLY, 0o644))
    results["create through dangling symlink"] = str(os.path.exists("nowhere"))
    renameat2("file", "other", RENAME_EXCHANGE)
    results["rename exchange"] = read("file") + "/" + read("other")
    fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
    results["O_TMPFILE"] = str(os.fstat(fd).st_nlink)
    os.close(fd)
    os.utime("file", ns=(1_000_000_001, 2_000_000_002))
    results["utime"] = str(os.stat("file").st_mtime_ns)
    os.utime("link", ns=(5, 7), follow_symlinks=False)
    results["lutime"] = str(os.lstat("link").st_mtime_ns) + "/" + str(os.stat("link").st_mtime_ns)
    results["access W_OK"] = str(os.access("file", os.W_OK))
    results["access W_OK missing"] = str(os.access("missing", os.W_OK))
    os.mkfifo("fifo")
    results["mkfifo"] = oct(os.stat("fifo").st_mode)
    os.truncate("file", 3)
    results["truncate"] = read("file")
    return results


def main() -> None:
    os.chdir(sys.argv[1])
    os.umask(0o022)
    setup()
    results = {}
    for name, action in CASES.items():
        try:
            action()
            results[name] = "ok"
        except OSError as e:
            results[name] = errno.errorcode.get(e.errno, str(e.errno))
    results.update(successes())
    print(json.dumps(results, indent=1, sort_keys=True))


main()
