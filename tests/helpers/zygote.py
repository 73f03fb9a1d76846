"""Entry-point processes without the import: a zygote that has imported torch, Lightning and Hydra forks each child.

A child is still a process of its own: its pid, its argv (sys.argv), its cwd, environment and file descriptors, its
exit status or the signal that killed it, and kill -9 or SIGTERM reach it alone (or its session, when asked). What it
skips is the ~10 s start-up of a fresh interpreter that every src/train.py of the suite paid. Tests whose claim is the
fresh interpreter itself (what --help imports, Hydra's plugin scan) start one with subprocess as before.

The zygote is `python tests/helpers/zygote.py FD`: it reads requests from the socket FD, one JSON line each with the
child's standard streams and a status pipe passed as file descriptors (SCM_RIGHTS); it forks, answers the child's pid,
and writes the child's wait status to the status pipe when it ends. It runs no torch operation itself, so no thread
pool exists to be broken by a fork.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

PRELOAD = ("torch", "torchvision", "lightning", "hydra", "omegaconf", "wandb", "submitit", "matplotlib.pyplot",
           "deepres.cli", "deepres.training.fit", "deepres.evaluate", "deepres.report.runs")
_FDS = 4  # stdin, stdout, stderr, status pipe


class ForkedProcess:
    """The part of subprocess.Popen the tests use, for a child of the zygote."""

    def __init__(self, pid: int, status_fd: int, args: list[str]):
        self.pid, self.args, self.returncode = pid, args, None
        self._status = os.fdopen(status_fd, "rb")
        self.pipes: tuple[int, int] | None = None  # stdout, stderr read ends, when captured

    def _read_status(self, timeout: float | None) -> int | None:
        import select
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if ready:
                data = self._status.read()
                self._status.close()
                self.returncode = os.waitstatus_to_exitcode(int(data)) if data else -signal.SIGKILL
        return self.returncode

    def poll(self) -> int | None:
        return self._read_status(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._read_status(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Its captured stdout and stderr (text), once it has ended; killed, and TimeoutExpired, after timeout."""
        streams = ["", ""]

        def drain(index: int, fd: int) -> None:
            with os.fdopen(fd, "rb") as f:
                streams[index] = f.read().decode(errors="replace")

        readers = [threading.Thread(target=drain, args=item, daemon=True) for item in enumerate(self.pipes or ())]
        for reader in readers:
            reader.start()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        for reader in readers:
            reader.join(60)  # a grandchild that outlives it may hold the pipes: its output then is cut
        return streams[0], streams[1]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The client: starts the zygote on first use, then forks children through it (one request at a time)."""

    def __init__(self):
        self._sock, self._proc, self._lock = None, None, threading.Lock()

    def _start(self) -> None:
        parent, child = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each child sets its own
        self._proc = subprocess.Popen([sys.executable, __file__, str(child.fileno())], pass_fds=[child.fileno()],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        child.close()
        self._sock = parent
        self._lines = parent.makefile("r")
        if json.loads(self._lines.readline()) != "ready":
            raise RuntimeError("the zygote did not start")

    def popen(self, args: list[str], cwd, env: dict | None = None, stdin=None, stdout=None, stderr=None,
              start_new_session: bool = False) -> ForkedProcess:
        """Start `python SCRIPT ARGS...`, `python -m MODULE ARGS...` or `python -c CODE ARGS...` (args[0] is the
        interpreter, as for subprocess) as a child of the zygote;
        stdin/stdout/stderr are file descriptors (None: /dev/null)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            devnull = os.open(os.devnull, os.O_RDWR)
            status_r, status_w = os.pipe()
            fds = [devnull if fd is None else fd for fd in (stdin, stdout, stderr)] + [status_w]
            request = {"argv": [str(a) for a in args[1:]], "cwd": str(cwd), "env": dict(os.environ if env is None
                                                                                     else env),
                       "setsid": start_new_session}
            socket.send_fds(self._sock, [json.dumps(request).encode() + b"\n"], fds)
            os.close(devnull)
            os.close(status_w)
            pid = json.loads(self._lines.readline())
        return ForkedProcess(pid, status_r, list(args))

    def start(self, args: list[str], cwd, env: dict | None = None, capture: bool = False,
              start_new_session: bool = False) -> "ForkedProcess":
        """Popen(args, cwd=cwd, env=env, start_new_session=...) through the zygote; with capture, its stdout and
        stderr are pipes that communicate() reads (else /dev/null)."""
        if not capture:
            return self.popen(args, cwd, env, start_new_session=start_new_session)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc = self.popen(args, cwd, env, stdout=out_w, stderr=err_w, start_new_session=start_new_session)
        os.close(out_w)
        os.close(err_w)
        proc.pipes = (out_r, err_r)
        return proc

    def run(self, args: list[str], cwd, env: dict | None = None, timeout: float | None = None
            ) -> subprocess.CompletedProcess:
        """subprocess.run(args, capture_output=True, text=True, timeout=timeout) through the zygote."""
        proc = self.start(args, cwd, env, capture=True)
        out, err = proc.communicate(timeout)
        return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


ZYGOTE = Zygote()


def _child(request: dict, fds: list[int], server: socket.socket, started: int) -> None:
    """In the forked child: become `python SCRIPT|-m MODULE|-c CODE ARGS...` and run it as __main__ (never
    returns)."""
    import runpy
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    server.close()
    if request["setsid"]:
        os.setsid()
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if "OMP_NUM_THREADS" in os.environ:
        # OpenMP read its environment when the zygote loaded torch, a fresh process reads the child's: the thread
        # count decides how sums are split, so a run must get the one it asked for
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    argv = request["argv"]
    # as a fresh interpreter builds sys.argv and sys.path: `-m MODULE` and `-c CODE` as python does (the cwd first),
    # a script with its folder first; then the child's PYTHONPATH, then the rest
    form = argv[0] if argv[0] in ("-m", "-c") else None
    sys.argv = [form, *argv[2:]] if form else list(argv)  # runpy puts the module's path in place of -m
    first = os.getcwd() if form else str(Path(argv[0]).resolve().parent)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:1] = [first, *inherited]
    os.write(started, b"1")  # as Popen returns after exec: its session, streams and cwd are set
    os.close(started)
    if form == "-m":
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif form == "-c":
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        runpy.run_path(argv[0], run_name="__main__")
    sys.exit(0)


def _serve(fd: int) -> None:
    import importlib
    server = socket.socket(fileno=fd)
    for module in PRELOAD:
        importlib.import_module(module)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_fds: dict[int, int] = {}
    server.sendall(b'"ready"\n')
    import selectors
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    buffer = b""
    while True:
        for key, _ in selector.select():
            if key.fileobj is server:
                data, fds, _, _ = socket.recv_fds(server, 1 << 20, _FDS)
                if not data:
                    return
                buffer += data
                request, buffer = json.loads(buffer[:buffer.index(b"\n")]), buffer[buffer.index(b"\n") + 1:]
                sys.stdout.flush()
                sys.stderr.flush()
                started_r, started_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for fd in (wake_r, wake_w, started_r):
                        os.close(fd)
                    _child(request, fds, server, started_w)
                os.close(started_w)
                os.read(started_r, 1)
                os.close(started_r)
                for child_fd in fds[:3]:
                    os.close(child_fd)
                status_fds[pid] = fds[3]
                server.sendall(json.dumps(pid).encode() + b"\n")
            else:
                os.read(wake_r, 4096)
            while status_fds:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                fd = status_fds.pop(pid)
                os.write(fd, str(status).encode())
                os.close(fd)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
