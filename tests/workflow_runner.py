"""A GitHub Actions runner in miniature: the steps of one job of a workflow file, run here
in order, as GitHub's runner runs them, for the tests of examples/github-workflow.yml.

What it does as GitHub does: the job's steps in order; ``run`` steps with ``bash
--noprofile --norc -eo pipefail`` as the runner's user (an unprivileged one with
passwordless sudo, as GitHub's ``runner`` is, for the job's time); ``uses: actions/checkout@v4`` copies the
repository (its files git tracks or does not ignore) into the workspace; ``uses: ./`` runs
the composite action at the workspace's top with its inputs; ``if:`` with ``success()``,
``failure()``, ``always()``, ``==``, ``!=``, ``&&``, ``||``; ``${{ }}`` with ``matrix``,
``inputs``, ``steps.ID.outputs``/``outcome``, ``github.workspace``/``action_path``,
``runner.temp``; GITHUB_OUTPUT, GITHUB_PATH and GITHUB_ENV. Anything else is refused,
so that a workflow using more than this is not passed by accident.

Run as root: ``python -m tests.workflow_runner WORKFLOW JOB KEY=VALUE... --user USER``.
It takes a mount namespace of its own with a memory file system at /run/hvfs (the root
manager's state, which nothing else on this machine shares), and gives USER passwordless
sudo (a rule in /etc/sudoers.d) for the job's time.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(==|!=|&&|\|\||!|\(|\))|([A-Za-z_][\w.-]*(?:\(\))?)|(\S))")


class Unsupported(Exception):
    """The workflow uses what this runner does not do."""


class Job:
    def __init__(self, workflow: Path, job: str, matrix: dict[str, str], user: str) -> None:
        document = yaml.safe_load(workflow.read_text())
        self.job = document["jobs"][job]
        self.matrix = matrix
        self.account = pwd.getpwnam(user)
        self.root = Path(tempfile.mkdtemp(prefix="hvfs-runner-"))
        os.chmod(self.root, 0o755)
        self.workspace = self.root / "workspace"
        self.temp = self.root / "temp"
        self.runtime = self.root / "runtime"  # XDG_RUNTIME_DIR, as a login session has
        for path in (self.workspace, self.temp, self.runtime):
            path.mkdir()
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
        os.chmod(self.runtime, 0o700)
        self.steps: dict[str, dict[str, Any]] = {}
        self.path: list[str] = []
        self.env: dict[str, str] = {}
        self.failed = False

    # -- expressions ----------------------------------------------------------------

    def value(self, name: str, context: dict[str, Any]) -> Any:
        if name in ("true", "false"):
            return name == "true"
        parts = name.split(".")
        current: Any = context
        for part in parts:
            if not isinstance(current, dict) or part not in current:
                raise Unsupported(f"unknown expression {name!r}")
            current = current[part]
        return current

    def evaluate(self, text: str, context: dict[str, Any]) -> Any:
        """A GitHub expression (the subset in this module's docstring), through Python's
        own operators on values that were looked up first: nothing of the text is run."""
        python: list[str] = []
        values: dict[str, Any] = {}
        for match in TOKEN.finditer(text):
            string, operator, name, other = match.groups()
            if other:
                raise Unsupported(f"cannot evaluate {text!r}")
            if string:
                key = f"v{len(values)}"
                values[key] = string[1:-1].replace("''", "'")
                python.append(key)
            elif operator:
                python.append({"&&": " and ", "||": " or ", "!": " not "}.get(operator, operator))
            elif name in ("success()", "failure()", "always()"):
                python.append(repr({"success()": not self.failed, "failure()": self.failed, "always()": True}[name]))
            elif name:
                key = f"v{len(values)}"
                values[key] = self.value(name, context)
                python.append(key)
        return eval("".join(python), {"__builtins__": {}}, values)

    def substitute(self, text: str, context: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            value = self.evaluate(match.group(1), context)
            return ("true" if value else "false") if isinstance(value, bool) else str(value)

        return EXPRESSION.sub(one, text)

    def condition(self, step: dict[str, Any], context: dict[str, Any]) -> bool:
        text = str(step.get("if", "success()"))
        text = EXPRESSION.sub(lambda m: m.group(1), text)
        if not re.search(r"\b(success|failure|always)\(\)", text):
            text = f"success() && ({text})"
        return bool(self.evaluate(text, context))

    # -- steps ----------------------------------------------------------------------

    def context(self, inputs: dict[str, str] | None = None, action_path: Path | None = None) -> dict[str, Any]:
        github = {"workspace": str(self.workspace), "action_path": str(action_path or "")}
        return {"matrix": self.matrix, "steps": self.steps, "inputs": inputs or {}, "github": github,
                "runner": {"temp": str(self.temp)}}  # fmt: skip

    def run(self) -> int:
        for step in self.job["steps"]:
            self.step(step, self.context())
        return 1 if self.failed else 0

    def step(self, step: dict[str, Any], context: dict[str, Any]) -> None:
        name = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
        if not self.condition(step, context):
            print(f"--- skipped: {name}", flush=True)
            self._record(step, "skipped", {})
            return
        print(f"--- {name}", flush=True)
        if "uses" in step:
            outputs = self.uses(step, context)
        else:
            directory = self.workspace / self.substitute(step.get("working-directory", "."), context)
            outputs = self.shell(self.substitute(step["run"], context), step.get("shell", "bash"), directory)
        self._record(step, "failure" if outputs is None else "success", outputs or {})
        if outputs is None:
            self.failed = True

    def _record(self, step: dict[str, Any], outcome: str, outputs: dict[str, str]) -> None:
        if "id" in step:
            self.steps[step["id"]] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}

    def uses(self, step: dict[str, Any], context: dict[str, Any]) -> dict[str, str] | None:
        action = step["uses"]
        if action.startswith("actions/checkout@"):
            self.checkout()
            return {}
        if action != "./":
            raise Unsupported(f"uses: {action}")
        definition = yaml.safe_load((self.workspace / "action.yml").read_text())
        if definition["runs"]["using"] != "composite":
            raise Unsupported("only composite actions")
        given = {k: self.substitute(str(v), context) for k, v in (step.get("with") or {}).items()}
        unknown = set(given) - set(definition.get("inputs", {}))
        if unknown:
            raise Unsupported(f"inputs the action does not have: {sorted(unknown)}")
        inputs = {k: given.get(k, str(v.get("default", ""))) for k, v in definition.get("inputs", {}).items()}
        outer_steps, self.steps = self.steps, {}
        failed_before, self.failed = self.failed, False
        try:
            inner = self.context(inputs, self.workspace)
            for inner_step in definition["runs"]["steps"]:
                self.step(inner_step, inner)
            outputs = {k: self.substitute(str(v["value"]), inner) for k, v in definition.get("outputs", {}).items()}
            ok = not self.failed
        finally:
            self.steps, self.failed = outer_steps, failed_before
        return outputs if ok else None

    def checkout(self) -> None:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.split(b"\0")  # fmt: skip
        for name in filter(None, (n.decode() for n in listed)):
            source, target = REPO / name, self.workspace / name
            if not source.exists() and not source.is_symlink():
                continue  # deleted in the work tree
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
        for path in [self.workspace, *self.workspace.rglob("*")]:
            os.lchown(path, self.account.pw_uid, self.account.pw_gid)

    def shell(self, script: str, shell: str, directory: Path) -> dict[str, str] | None:
        """Run ``script`` as the runner's user; its outputs, or None if it failed."""
        if shell != "bash":
            raise Unsupported(f"shell: {shell}")
        files = {}
        for kind in ("GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_ENV"):
            fd, name = tempfile.mkstemp(dir=self.temp, prefix=f"{kind.lower()}-")
            os.close(fd)
            os.chown(name, self.account.pw_uid, self.account.pw_gid)
            files[kind] = name
        script_file = Path(tempfile.mkstemp(dir=self.temp, prefix="step-", suffix=".sh")[1])
        script_file.write_text(script)
        os.chown(script_file, self.account.pw_uid, self.account.pw_gid)
        env = {
            "HOME": self.account.pw_dir, "USER": self.account.pw_name, "LANG": "C.UTF-8", "CI": "true",
            "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(self.workspace), "RUNNER_TEMP": str(self.temp),
            "XDG_RUNTIME_DIR": str(self.runtime), **self.env, **files,
            "PATH": ":".join([*reversed(self.path), "/usr/local/bin:/usr/bin:/bin"]),
        }  # fmt: skip
        command = ["runuser", "-u", self.account.pw_name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                   "bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)]  # fmt: skip
        code = subprocess.run(command, cwd=directory).returncode
        self.path += [line for line in Path(files["GITHUB_PATH"]).read_text().splitlines() if line]
        for line in Path(files["GITHUB_ENV"]).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                self.env[key] = value
        outputs = {}
        for line in Path(files["GITHUB_OUTPUT"]).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                outputs[key] = value
        print(f"--- exit {code}", flush=True)
        return outputs if code == 0 else None

    def close(self) -> None:
        if os.environ.get("HVFS_RUNNER_KEEP"):  # to look into a failure
            print(f"workflow_runner: kept {self.root}", flush=True)
            return
        shutil.rmtree(self.root, ignore_errors=True)


def fresh_runner(user: str) -> Path:
    """This process's own /run/hvfs (in the mount namespace ``main`` took), and passwordless
    sudo for ``user`` until ``main`` ends: a rule in /etc/sudoers.d, the one change this
    runner makes outside itself (a mount over /etc/sudoers.d would stay private, but a
    mount below /etc is refused by the host image's overlay; see the tests)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "hvfs-runner", "/run/hvfs"], check=True)
    rule = Path(f"/etc/sudoers.d/hvfs-runner-{os.getpid()}")
    fd = os.open(rule, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(f"{user} ALL=(ALL) NOPASSWD: ALL\n")
    return rule


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workflow", type=Path)
    parser.add_argument("job")
    parser.add_argument("matrix", nargs="*", help="KEY=VALUE")
    parser.add_argument("--user", required=True, help="the runner's user (given passwordless sudo)")
    args = parser.parse_args()
    if os.environ.get("HVFS_RUNNER_NAMESPACE") != str(os.getpid()):
        os.makedirs("/run/hvfs", mode=0o700, exist_ok=True)
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'HVFS_RUNNER_NAMESPACE=$$ exec "$@"', "sh", sys.executable, "-m", "tests.workflow_runner",
                   *sys.argv[1:]]  # fmt: skip
        return subprocess.run(command, cwd=REPO).returncode
    rule = fresh_runner(args.user)
    job = Job(args.workflow, args.job, dict(item.split("=", 1) for item in args.matrix), args.user)
    try:
        return job.run()
    except Unsupported as e:
        print(f"workflow_runner: unsupported: {e}", flush=True)
        return 2
    finally:
        job.close()
        rule.unlink()


if __name__ == "__main__":
    sys.exit(main())
