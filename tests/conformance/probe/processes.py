"""Parts of a case that run in a child process: an action whose answer depends on the
process (POSIX locks, another uid), or a program started with one of the exec calls."""

import json
import os
import signal
from collections.abc import Callable
from contextlib import suppress

from observe import Json, read_all
from runner import Skipped
from system import CHILD_ENV


def kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def in_child(action: Callable[[], Json]) -> Json:
    """Run action in a forked child; return its value, or raise its errno in the parent.

    Used where the answer depends on the process: POSIX locks conflict only between
    processes, and the permission cases drop to another uid, which cannot be undone.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe and never return into the runner
        try:
            os.close(read_end)
            try:
                reply: dict[str, Json] = {"value": action()}
            except Skipped:
                reply = {"skipped": True}
            except OSError as error:
                reply = {"errno": error.errno}
            except BaseException as error:
                reply = {"exception": repr(error)}
            os.write(write_end, json.dumps(reply).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = read_all(read_end)
    except BaseException:
        kill(pid)  # the case timed out: do not wait for a child that may never end
        raise
    finally:
        os.close(read_end)
        reap(pid)
    reply = json.loads(data or b'{"exception": "the child died without a reply"}')
    if "skipped" in reply:
        raise Skipped
    if "errno" in reply:
        raise OSError(reply["errno"], os.strerror(reply["errno"]))
    if "exception" in reply:
        raise RuntimeError(reply["exception"])
    return reply["value"]


def run_program(exec_call: Callable[[], object]) -> dict[str, Json]:
    """Fork, exec with exec_call in the child, and return the exit status and stdout.

    A failed exec raises its errno here: the child sends it back through a close-on-exec
    pipe, which a successful exec closes without a word.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = "exec returned"
        try:
            os.dup2(out_write, 1)
            exec_call()
        except OSError as error:
            message = str(error.errno)
        except BaseException as error:
            message = repr(error)
        try:
            os.write(err_write, message.encode())
        finally:
            os._exit(127)
    os.close(out_write)
    os.close(err_write)
    try:
        failure = read_all(err_read).decode()
        output = read_all(out_read).decode(errors="replace")
    except BaseException:
        kill(pid)
        raise
    finally:
        os.close(out_read)
        os.close(err_read)
        status = reap(pid)
    if failure.isdigit():
        raise OSError(int(failure), os.strerror(int(failure)))
    if failure:
        raise RuntimeError(failure)
    return {"status": status, "stdout": output}


def execv(path: str, argv: list[str]) -> Callable[[], object]:
    return lambda: os.execve(path, argv, CHILD_ENV)
