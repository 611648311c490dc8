"""posix_spawn(3) with the GIL released: ``os.posix_spawn`` holds it until the child has
exec'd (glibc's spawn is a vfork: the parent waits for the child's exec), so every other
thread of the manager, a run's among them, stood still while a VM's hvfs-init was spawned
(the largest share of the GIL's time in a warm run's profile). A ctypes call releases it;
the child runs no Python either way (file actions and exec, in glibc).

``close_from`` has the child close every fd above the ones it is given before its exec
(``posix_spawn_file_actions_addclosefrom_np``, glibc 2.34): O_CLOEXEC closes them only
inside the exec, after the vfork parent has woken (``exec_mmap``), and their last release
waits for the child's return to user space. ``hvfs._sys.spawner`` says why that matters."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hvfs._sys import abi
from hvfs._sys.libc import function

_p = ctypes.c_void_p
_init_actions = function("posix_spawn_file_actions_init", ctypes.c_int, _p)
_destroy_actions = function("posix_spawn_file_actions_destroy", ctypes.c_int, _p)
_add_dup2 = function("posix_spawn_file_actions_adddup2", ctypes.c_int, _p, ctypes.c_int, ctypes.c_int)
_add_open = function("posix_spawn_file_actions_addopen", ctypes.c_int, _p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_int, ctypes.c_uint)  # fmt: skip
_add_close = function("posix_spawn_file_actions_addclose", ctypes.c_int, _p, ctypes.c_int)
try:
    _add_close_from: Any = function("posix_spawn_file_actions_addclosefrom_np", ctypes.c_int, _p, ctypes.c_int)
except AttributeError:  # glibc before 2.34: the child's copies go at its exec (see the docstring)
    _add_close_from = None
_init_attr = function("posix_spawnattr_init", ctypes.c_int, _p)
_destroy_attr = function("posix_spawnattr_destroy", ctypes.c_int, _p)
_set_flags = function("posix_spawnattr_setflags", ctypes.c_int, _p, ctypes.c_short)
_set_mask = function("posix_spawnattr_setsigmask", ctypes.c_int, _p, _p)
_set_default = function("posix_spawnattr_setsigdefault", ctypes.c_int, _p, _p)
_sigemptyset = function("sigemptyset", ctypes.c_int, _p)
_sigaddset = function("sigaddset", ctypes.c_int, _p, ctypes.c_int)
_spawn = function("posix_spawn", ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, _p, _p, _p, _p)


def _check(err: int, what: str) -> None:
    if err:
        raise OSError(err, os.strerror(err), what)


def _sigset(signals: Iterable[int]) -> ctypes.Array[ctypes.c_char]:
    found = ctypes.create_string_buffer(abi.SIGSET_SIZE)
    _sigemptyset(found)
    for number in signals:
        if _sigaddset(found, int(number)):
            raise ValueError(f"signal {int(number)} cannot be set")
    return found


def _strings(values: Sequence[bytes]) -> Any:
    return (ctypes.c_char_p * (len(values) + 1))(*values, None)


def posix_spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    file_actions: Sequence[tuple[Any, ...]] = (),
    setsid: bool = False,
    setsigmask: Iterable[int] | None = None,
    setsigdef: Iterable[int] | None = None,
    close_from: int | None = None,
) -> int:
    """``os.posix_spawn``'s call (its file actions: ``os.POSIX_SPAWN_DUP2``, ``_OPEN``,
    ``_CLOSE``), without the GIL while the child starts; the child's pid. With
    ``close_from``, the child closes every fd from that number up after the file actions,
    before its exec."""
    actions = ctypes.create_string_buffer(abi.POSIX_SPAWN_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(abi.POSIX_SPAWN_ATTR_SIZE)
    _check(_init_actions(actions), "posix_spawn_file_actions_init")
    try:
        _check(_init_attr(attr), "posix_spawnattr_init")
        try:
            for action in file_actions:
                if action[0] == os.POSIX_SPAWN_DUP2:
                    _check(_add_dup2(actions, action[1], action[2]), "posix_spawn_file_actions_adddup2")
                elif action[0] == os.POSIX_SPAWN_OPEN:
                    fd, name, flags, mode = action[1:]
                    _check(_add_open(actions, fd, os.fsencode(name), flags, mode), "posix_spawn_file_actions_addopen")
                elif action[0] == os.POSIX_SPAWN_CLOSE:
                    _check(_add_close(actions, action[1]), "posix_spawn_file_actions_addclose")
                else:
                    raise ValueError(f"unknown file action {action[0]!r}")
            if close_from is not None and _add_close_from is not None:
                _check(_add_close_from(actions, close_from), "posix_spawn_file_actions_addclosefrom_np")
            flags = 0
            kept = []  # the sigsets live until the call: attr points at copies, but say so
            if setsid:
                flags |= abi.POSIX_SPAWN_SETSID
            if setsigmask is not None:
                flags |= abi.POSIX_SPAWN_SETSIGMASK
                kept.append(mask := _sigset(setsigmask))
                _check(_set_mask(attr, mask), "posix_spawnattr_setsigmask")
            if setsigdef is not None:
                flags |= abi.POSIX_SPAWN_SETSIGDEF
                kept.append(default := _sigset(setsigdef))
                _check(_set_default(attr, default), "posix_spawnattr_setsigdefault")
            _check(_set_flags(attr, flags), "posix_spawnattr_setflags")
            args = _strings([os.fsencode(a) for a in argv])
            envp = _strings([os.fsencode(f"{k}={v}") for k, v in env.items()])
            pid = ctypes.c_int()
            err = _spawn(ctypes.byref(pid), os.fsencode(path), actions, attr, args, envp)
            if err:
                raise OSError(err, os.strerror(err), path)
            return pid.value
        finally:
            _destroy_attr(attr)
    finally:
        _destroy_actions(actions)
