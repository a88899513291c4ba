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

Scripts and benchmarks start their commands themselves: for them the server also listens on a unix socket, and a
directory of shims (Server.shims: one small executable per console script, put first on a script's PATH or used as
a benchmark's command directory) hands each command over with its argv, working directory, environment and its
stdin, stdout and stderr (the file descriptors themselves). A process per command then waits for it and answers
its exit status, which the shim exits with (a signal's death by that signal); a signal the shim receives (TERM,
INT, HUP) is passed on to the command's process group, which is killed if the shim dies first; one the shim was
started with ignored, the command ignores. A command's CPU time is its own process's, not the shim's: the study's
runner, which reads a trainer's CPU from /proc, is not shimmed.

Run as a script, this file is the server: it reads one JSON request a line on stdin, answers {"pid": N} once the
child exists and {"status": S} when it has ended (S as subprocess reports it: negative for a signal)."""

import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys

# read by Python, the thread pools, torch or the C libraries as a process starts or imports torch and fairseq
STARTUP_VARIABLES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "TORCH", "CUDA", "NCCL_", "LD_", "MALLOC_")
# ... of which a child applies these itself (its sys.stdout and sys.stderr are made as a new process makes them)
APPLIED_BY_THE_CHILD = ("PYTHONUNBUFFERED",)


def differing(env: dict, server_env: dict, set_by_imports: dict) -> list[str]:
    """The start-up variables that a process started with `env` would see otherwise than the server did (the others
    take effect in the child, whose environment is the command's before it runs anything of its own)."""
    keys = {k for k in set(env) | set(server_env) if k.startswith(STARTUP_VARIABLES)}
    return sorted(k for k in keys if env.get(k) != server_env.get(k) and k not in APPLIED_BY_THE_CHILD and not (
        k in set_by_imports and env.get(k) in (None, set_by_imports[k])))


def _stdio(fd: int, old, unbuffered: bool):
    """sys.stdout (fd 1) or sys.stderr (fd 2) as a new process makes it (CPython's create_stdio): block-buffered,
    line-buffered on a terminal and for stderr, written through under PYTHONUNBUFFERED; the encoding is `old`'s."""
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw), encoding=old.encoding, errors=old.errors,
                            newline="\n", line_buffering=not unbuffered and (raw.isatty() or fd == 2),
                            write_through=unbuffered)


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


def _child(req, stdio=None) -> None:
    """In the forked child: become the command, run it, and never return. Its stdin, stdout and stderr are the file
    descriptors `stdio` (a shim's), or /dev/null and the files req["out"], req["err"]."""
    import atexit

    code, inherited = 1, ()
    try:
        os.setsid()
        if stdio is None:
            stdio = [os.open(os.devnull, os.O_RDONLY)] + [
                os.open(req[k], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for k in ("out", "err")]
        for fd, new in enumerate(stdio):
            os.dup2(new, fd)
        for new in set(stdio) - {0, 1, 2}:
            os.close(new)
        for signum in req.get("ignored", ()):
            signal.signal(signum, signal.SIG_IGN)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        inherited = sys.stdout, sys.stderr  # the server's, empty: still written by handlers made at its imports
        sys.stdout = sys.__stdout__ = _stdio(1, sys.stdout, unbuffered)
        sys.stderr = sys.__stderr__ = _stdio(2, sys.stderr, unbuffered)
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
            for stream in (sys.stdout, sys.stderr, *inherited):
                stream.flush()
        finally:
            os._exit(code)


_FAIRSEQ_LOGGING = []  # the root logger's handlers and level as importing fairseq left them


def _recv_exactly(conn, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        b = conn.recv(n - len(buf))
        if not b:
            raise ConnectionError("the shim went away")
        buf += b
    return buf


def _handle(conn, server_env: dict, set_by_imports: dict, log: str) -> None:
    """In a process of its own, forked by the gateway for one shim: run its command as a child, pass the shim's
    signals on, answer the command's exit status, and never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        head, stdio, _, _ = socket.recv_fds(conn, 8, 3)
        head += _recv_exactly(conn, 8 - len(head))
        req = json.loads(_recv_exactly(conn, struct.unpack("!Q", head)[0]))
        fresh = differing(req["env"], server_env, set_by_imports)
        if fresh:
            with open(log, "a") as f:
                f.write(f"{req['name']}: a fresh process ({', '.join(fresh)} differ)\n")
            conn.sendall(b'{"fresh": true}\n')
            code = 0
            return
        pid = os.fork()
        if pid == 0:
            conn.close()
            _child(req, stdio)
        with open(log, "a") as f:
            f.write(f"{req['name']}: forked, pid {pid}\n")
        for fd in stdio:
            os.close(fd)
        shim_alive = True
        while True:
            if shim_alive and select.select([conn], [], [], 0.2)[0]:
                signals = conn.recv(64)
                shim_alive = bool(signals)
                for signum in signals or [signal.SIGKILL]:  # the shim died: so does its command
                    try:
                        os.killpg(pid, signum)
                    except ProcessLookupError:  # before the child's setsid
                        os.kill(pid, signum)
            done, status = os.waitpid(pid, 0 if not shim_alive else os.WNOHANG)
            if done:
                break
        status = os.waitstatus_to_exitcode(status)
        with open(log, "a") as f:
            f.write(f"{req['name']}: pid {pid} exited {status}\n")
        if shim_alive:
            conn.sendall(json.dumps({"status": status}).encode() + b"\n")
        code = 0
    finally:
        os._exit(code)


def _gateway(path: str, parent_gone: int, server_env: dict, set_by_imports: dict) -> None:
    """The shims' side of the server: accept each shim on the socket at `path` and fork a process for it (_handle),
    until the server's end of the pipe `parent_gone` closes. Never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-shim processes are reaped by the kernel
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
        log = os.path.join(os.path.dirname(path), "shims.log")
        while True:
            ready = select.select([listener, parent_gone], [], [])[0]
            if parent_gone in ready:
                break
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                os.close(parent_gone)
                _handle(conn, server_env, set_by_imports, log)
            conn.close()
        code = 0
    finally:
        os._exit(code)


def serve(socket_path: str | None = None) -> None:
    import logging

    before = dict(os.environ)
    root = logging.getLogger()
    fresh = list(root.handlers), root.level
    import fairseq  # noqa: F401  torch first, then fairseq's own modules, scikit-learn and scipy
    import torch._dynamo  # noqa: F401  imported on a first optimizer step otherwise

    _FAIRSEQ_LOGGING[:] = list(root.handlers), root.level
    root.handlers[:] = fresh[0]
    root.setLevel(fresh[1])
    assert not any(m.split(".")[0] in ("fairseq_cli", "one_layer_lottery") for m in sys.modules), \
        "a command's own module must be imported by its child, not here"
    if socket_path:
        set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
        gone_r, gone_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            os.close(gone_w)
            _gateway(socket_path, gone_r, before, set_by_imports)
        os.close(gone_r)
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
        self.socket = os.path.join(workdir, "shims.sock")

    def _start(self, env):
        self.env = dict(env)
        with open(os.path.join(self.workdir, "forkserver.log"), "w") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), self.socket],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env,
                                         bufsize=0)
        line = self._line(300)
        if not line or not line.startswith("ready "):
            raise RuntimeError(f"the test fork server did not start: see {self.workdir}/forkserver.log")
        imported = json.loads(line[len("ready "):])  # what its imports set (torch: KMP_*, ...)
        self.set_by_imports = {k: v for k, v in imported.items() if self.env.get(k) != v}

    def shims(self, env, names) -> str | None:
        """A directory of executables named `names` (console scripts of this environment) that run each command
        as a fork of the server (started with `env` if it is not running), or None where forking is off."""
        if os.environ.get("OLL_TESTS_FORK") == "0":
            return None
        if self.proc is None:
            self._start(env)
        shims = os.path.join(self.workdir, "bin")
        os.makedirs(shims, exist_ok=True)
        for name in names:
            path = os.path.join(shims, name)
            if not os.path.exists(path):
                with open(path + ".tmp", "w") as f:
                    f.write(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                            f"import forkserver\nforkserver.shim({self.socket!r}, "
                            f"{os.path.join(os.path.dirname(sys.executable), name)!r})\n")
                os.chmod(path + ".tmp", 0o755)
                os.replace(path + ".tmp", path)
        return shims

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
        elif fresh := differing(env, self.env, self.set_by_imports):
            with open(os.path.join(self.workdir, "fresh.log"), "a") as f:
                f.write(f"{os.path.basename(path)}: a fresh process ({', '.join(fresh)} differ)\n")
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


def shim(socket_path: str, real: str) -> None:
    """A shim's whole life: hand the command `real` with this process's argv, directory, environment and stdio to
    the server at `socket_path`, forward TERM, INT and HUP to it, and exit as it did. Runs it here instead (exec)
    where the server cannot be reached or the start-up environment differs from the server's."""
    argv = sys.argv[1:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # TERM, INT and HUP, but those this process was started with ignored (a background job's INT, nohup's HUP): the
    # command ignores them too
    original = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    forwarded = [s for s, handler in original.items() if handler != signal.SIG_IGN]

    def forward(signum, _frame):
        try:
            conn.send(bytes([signum]))
        except OSError:
            pass

    def run_here():
        for signum, handler in original.items():
            signal.signal(signum, handler)
        conn.close()
        os.execv(real, [real, *argv])

    for signum in forwarded:  # before the command can exist
        signal.signal(signum, forward)
    try:
        conn.connect(socket_path)
        req = json.dumps({"name": os.path.basename(real), "path": real, "argv": argv, "cwd": os.getcwd(),
                          "env": dict(os.environ), "ignored": [int(s) for s in original if s not in forwarded]}).encode()
        socket.send_fds(conn, [struct.pack("!Q", len(req))], [0, 1, 2])
        conn.sendall(req)
    except OSError:
        run_here()
    answer = b""
    while not answer.endswith(b"\n"):
        b = conn.recv(4096)
        if not b:
            sys.exit(f"{os.path.basename(real)}: the test fork server went away")
        answer += b
    answer = json.loads(answer)
    if answer.get("fresh"):
        run_here()
    status = answer["status"]
    if status < 0:  # killed by a signal: so is the shim
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else None)
