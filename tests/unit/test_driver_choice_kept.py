"""The automatic driver choice (hvfs.driver_choice): the kernel's part made once per
process, the environment's asked every time."""

from __future__ import annotations

import os

from hvfs import driver_choice


def kernels_choice() -> str:
    with open("/proc/sys/kernel/seccomp/actions_avail") as f:
        notify = "user_notif" in f.read().split()
    return "seccomp" if notify and driver_choice.kernel_release() >= driver_choice.ADDFD_KERNEL else "ptrace"


def test_the_kernels_choice_is_made_once_and_is_the_kernels() -> None:
    driver_choice._kernels.cache_clear()
    first = driver_choice.automatic({})
    assert first.driver == kernels_choice()
    assert driver_choice.automatic({}) is first
    assert driver_choice._kernels.cache_info().misses == 1


def test_the_environment_is_asked_at_every_choice() -> None:
    driver_choice.automatic({})  # the kernel's kept
    missing = driver_choice.automatic({driver_choice.AS_IF_MISSING: "1"})
    assert missing.driver == "ptrace" and driver_choice.AS_IF_MISSING in missing.why
    assert driver_choice.automatic({driver_choice.AS_IF_MISSING: "0"}).driver == kernels_choice()
    assert driver_choice.automatic(os.environ).driver in driver_choice.DRIVERS
