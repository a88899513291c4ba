"""A warm start for run_cli: one process per test worker imports torch and fairseq once, then forks a child per
command, which runs that command's console-script entry point with the command's argv, working directory,
environment, stdin (/dev/null), stdout and stderr, and exits as the command would (the same exit status, atexit
handlers run). A fresh `fairseq-train` spends 5-8 s of CPU importing torch, fairseq (scikit-learn and scipy
among its imports) and torch._dynamo before it reads its first flag; the suite starts about a hundred of them.

What a fresh process would do differently, and how it is kept: the server imports fairseq on a root logger it then
restores, and a child imports its command's module first on that fresh root logger, then applies what fairseq's
import did to it only where the module left it untouched (fairseq-train configures logging to stdout before it
imports fairseq, so fairseq's own basicConfig calls do nothing there; `one-layer-lottery` leaves it to them).
Environment variables read at start-up (STARTUP_VARIABLES: Python's, the thread pools', torch's) must match the
server's, but for what the server's own imports set; otherwise, and for anything that is not a console script of
fairseq or of this package (scripts, benchmarks, tests that kill a command mid-write), a command runs as a fresh
process. Other variables are the command's own: the child's environment is replaced before it runs.
`OLL_TESTS_FORK=0` turns it off: every command is then a fresh process.

Run as a script, this file is the server: it reads one JSON request a line on stdin, answers {"pid": N} once the
child exists and {"status": S} when it has ended (S as subprocess reports it: negative for a signal)."""

import json
import os
import select
import signal
import subprocess
import sys

# read by Python, the thread pools, torch or the C libraries as a process starts or imports torch and fairseq
STARTUP_VARIABLES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "TORCH", "CUDA", "NCCL_", "LD_", "MALLOC_")


def _exit_code(value) -> int:
    """The exit status `sys.exit(value)` gives, printing a non-int value to stderr as Python does."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _load(ep):
    """The entry point's function, its module imported as in a new process: its top level runs on a fresh root
    logger, which then gets what fairseq's import did to it (logging.basicConfig) only if the module left it alone."""
    import importlib
    import logging

    root = logging.getLogger()
    importlib.import_module(ep.module)
    if not root.handlers:
        root.handlers[:] = _FAIRSEQ_LOGGING[0]
        root.setLevel(_FAIRSEQ_LOGGING[1])
    return ep.load()


def _child(req) -> None:
    """In the forked child: become the command, run it, and never return."""
    import atexit

    code = 1
    try:
        os.setsid()
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            new = os.open(path, flags, 0o644)
            os.dup2(new, fd)
            os.close(new)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [req["path"], *req["argv"]]
        sys.path[0] = os.path.dirname(req["path"])  # as for the installed script: its own directory first
        from importlib.metadata import entry_points

        (ep,) = [e for e in entry_points(group="console_scripts") if e.name == req["name"]]
        try:
            code = _exit_code(_load(ep)())
        except SystemExit as e:
            code = _exit_code(e.code)
        except BaseException:  # noqa: BLE001 - what the interpreter would print and exit 1 on
            sys.excepthook(*sys.exc_info())
            code = 1
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


_FAIRSEQ_LOGGING = []  # the root logger's handlers and level as importing fairseq left them


def serve() -> None:
    import logging

    root = logging.getLogger()
    fresh = list(root.handlers), root.level
    import fairseq  # noqa: F401  torch first, then fairseq's own modules, scikit-learn and scipy
    import torch._dynamo  # noqa: F401  imported on a first optimizer step otherwise

    _FAIRSEQ_LOGGING[:] = list(root.handlers), root.level
    root.handlers[:] = fresh[0]
    root.setLevel(fresh[1])
    assert not any(m.split(".")[0] in ("fairseq_cli", "one_layer_lottery") for m in sys.modules), \
        "a command's own module must be imported by its child, not here"
    sys.stdout.write("ready " + json.dumps(dict(os.environ)) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


class Server:
    """The test side: start the server on first use, send it commands, read their output back."""

    def __init__(self, workdir: str):
        self.workdir, self.proc, self.env, self.set_by_imports, self.n = workdir, None, None, {}, 0

    def _start(self, env):
        self.env = dict(env)
        with open(os.path.join(self.workdir, "forkserver.log"), "w") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=self.env, bufsize=0)
        line = self._line(300)
        if not line or not line.startswith("ready "):
            raise RuntimeError(f"the test fork server did not start: see {self.workdir}/forkserver.log")
        imported = json.loads(line[len("ready "):])  # what its imports set (torch: KMP_*, ...)
        self.set_by_imports = {k: v for k, v in imported.items() if self.env.get(k) != v}

    def differs(self, env) -> list[str]:
        """The start-up variables that a process started with `env` would see otherwise than the server did (the
        others take effect in the child, whose environment is the command's before it runs anything of its own)."""
        keys = {k for k in set(env) | set(self.env) if k.startswith(STARTUP_VARIABLES)}
        return sorted(k for k in keys if env.get(k) != self.env.get(k) and not (
            k in self.set_by_imports and env.get(k) in (None, self.set_by_imports[k])))

    def _line(self, timeout):
        buf = b""
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return None
            b = self.proc.stdout.read(1)
            if not b:
                raise RuntimeError(f"the test fork server exited: see {self.workdir}/forkserver.log")
            buf += b
        return buf.decode().strip()

    def run(self, path, argv, cwd, env, timeout):
        """subprocess.run(capture_output=True, text=True, timeout=timeout) for the console script at `path`, or
        None where this command must run as a fresh process."""
        if os.environ.get("OLL_TESTS_FORK") == "0":
            return None
        if self.proc is None:
            self._start(env)
        elif self.differs(env):
            with open(os.path.join(self.workdir, "fresh.log"), "a") as f:
                f.write(f"{os.path.basename(path)}: a fresh process ({', '.join(self.differs(env))} differ)\n")
            return None
        self.n += 1
        out, err = (os.path.join(self.workdir, f"{self.n}.{s}") for s in ("out", "err"))
        req = {"name": os.path.basename(path), "path": path, "argv": list(argv), "cwd": str(cwd), "env": dict(env),
               "out": out, "err": err}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        pid = json.loads(self._line(60))["pid"]
        answer = self._line(timeout)
        if answer is None:
            os.killpg(pid, signal.SIGKILL)
            self._line(60)
            raise subprocess.TimeoutExpired([path, *argv], timeout)
        texts = []
        for p in (out, err):
            with open(p, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
            os.remove(p)
        return subprocess.CompletedProcess([path, *argv], json.loads(answer)["status"], *texts)

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.proc = None


if __name__ == "__main__":
    serve()
