"""execve(2), execveat(2) and fexecve(3) on files of the mount under test; chdir(2),
fchdir(2) and getcwd(3)."""

import os

from observe import Json, install_program, listing, write
from processes import execv, run_program
from runner import Case, case
from system import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, CHILD_ENV, RDONLY, WRONLY, execveat

# -- execve, execveat, fexecve ---------------------------------------------------------------
SCRIPT = '#!/bin/sh\necho hello "$@"\nexit 7\n'


@case
def exec_elf_copy(c: Case) -> Json:
    install_program("true")
    return run_program(execv("./true", ["true"]))


@case
def exec_elf_copy_status(c: Case) -> Json:
    install_program("false", "/bin/false")
    return run_program(execv("./false", ["false"]))


@case
def exec_script(c: Case) -> Json:
    write("script", SCRIPT, 0o755)
    return run_program(execv("./script", ["script", "a", "b"]))


@case
def exec_elf_not_executable(c: Case) -> Json:
    install_program("true", mode=0o644)
    return run_program(execv("./true", ["true"]))


@case
def exec_script_not_executable(c: Case) -> Json:
    write("script", SCRIPT, 0o644)
    return run_program(execv("./script", ["script"]))


@case
def exec_no_shebang(c: Case) -> Json:
    # the kernel knows no format for this; only shells fall back to running it as a script
    write("text", "echo hello\n", 0o755)
    return run_program(execv("./text", ["text"]))


@case
def exec_directory(c: Case) -> Json:
    os.mkdir("d")
    return run_program(execv("./d", ["d"]))


@case
def exec_missing(c: Case) -> Json:
    return run_program(execv("./missing", ["missing"]))


@case
def exec_missing_interpreter(c: Case) -> Json:
    write("script", "#!/nonexistent/sh\n", 0o755)
    return run_program(execv("./script", ["script"]))


@case
def exec_interpreter_not_executable(c: Case) -> Json:
    write("interp", SCRIPT, 0o644)
    write("script", "#!./interp\n", 0o755)
    return run_program(execv("./script", ["script"]))


@case
def exec_through_symlink(c: Case) -> Json:
    install_program("true")
    os.symlink("true", "link")
    return run_program(execv("./link", ["link"]))


@case
def exec_open_for_writing(c: Case) -> Json:
    install_program("true")
    c.open("true", WRONLY)
    return run_program(execv("./true", ["true"]))


@case
def exec_execveat_dirfd(c: Case) -> Json:
    os.mkdir("d")
    install_program("d/true")
    dirfd = c.open("d", RDONLY)
    return run_program(lambda: execveat(dirfd, "true", ["true"], 0))


@case
def exec_execveat_empty_path(c: Case) -> Json:
    install_program("true")
    fd = c.open("true", os.O_PATH)
    return run_program(lambda: execveat(fd, "", ["true"], AT_EMPTY_PATH))


@case
def exec_execveat_nofollow_symlink(c: Case) -> Json:
    install_program("true")
    os.symlink("true", "link")
    return run_program(lambda: execveat(AT_FDCWD, "link", ["link"], AT_SYMLINK_NOFOLLOW))


@case
def exec_execveat_bad_flags(c: Case) -> Json:
    install_program("true")
    return run_program(lambda: execveat(AT_FDCWD, "true", ["true"], 0x1))


@case
def exec_fexecve_elf(c: Case) -> Json:
    install_program("true")
    fd = c.open("true", RDONLY)
    return run_program(lambda: os.execve(fd, ["true"], CHILD_ENV))


@case
def exec_fexecve_script_cloexec(c: Case) -> Json:
    # the interpreter would open /dev/fd/N, which close-on-exec has closed: ENOENT
    write("script", SCRIPT, 0o755)
    fd = c.open("script", RDONLY)
    return run_program(lambda: os.execve(fd, ["script"], CHILD_ENV))


@case
def exec_fexecve_script_inheritable(c: Case) -> Json:
    write("script", SCRIPT, 0o755)
    fd = c.open("script", RDONLY)
    os.set_inheritable(fd, True)
    return run_program(lambda: os.execve(fd, ["script"], CHILD_ENV))


# -- chdir, fchdir, getcwd -----------------------------------------------------------------


@case
def cwd_getcwd(c: Case) -> Json:
    return c.cwd()


@case
def cwd_chdir_subdir(c: Case) -> Json:
    os.mkdir("sub")
    os.chdir("sub")
    return c.cwd()


@case
def cwd_chdir_dotdot(c: Case) -> Json:
    os.makedirs("a/b")
    os.chdir("a/b")
    os.chdir("..")
    return c.cwd()


@case
def cwd_chdir_symlink(c: Case) -> Json:
    # getcwd() shows the directory the symlink led to
    os.mkdir("sub")
    os.symlink("sub", "link")
    os.chdir("link")
    return c.cwd()


@case
def cwd_chdir_file(c: Case) -> Json:
    write("f")
    os.chdir("f")


@case
def cwd_chdir_missing(c: Case) -> Json:
    os.chdir("missing")


@case
def cwd_chdir_no_search_permission(c: Case) -> Json:
    os.mkdir("d", 0o600)
    os.chdir("d")
    return c.cwd()


@case
def cwd_fchdir(c: Case) -> Json:
    os.mkdir("sub")
    os.fchdir(c.open("sub", RDONLY))
    return c.cwd()


@case
def cwd_fchdir_path_fd(c: Case) -> Json:
    os.mkdir("sub")
    os.fchdir(c.open("sub", os.O_PATH))
    return c.cwd()


@case
def cwd_fchdir_file(c: Case) -> Json:
    write("f")
    os.fchdir(c.open("f", RDONLY))


@case
def cwd_create_after_chdir(c: Case) -> Json:
    os.mkdir("sub")
    os.chdir("sub")
    write("f", "relative")
    return {"sub": listing(os.path.join(c.dir, "sub")), ".": listing(c.dir)}


@case
def cwd_removed(c: Case) -> Json:
    os.mkdir("gone")
    os.chdir("gone")
    os.rmdir("../gone")
    return c.cwd()


@case
def cwd_create_in_removed(c: Case) -> Json:
    os.mkdir("gone")
    os.chdir("gone")
    os.rmdir("../gone")
    write("f")


@case
def cwd_after_rename(c: Case) -> Json:
    os.mkdir("d")
    os.chdir("d")
    os.rename("../d", "../e")
    write("f")
    return {"cwd": c.cwd(), "e": listing(os.path.join(c.dir, "e"))}
