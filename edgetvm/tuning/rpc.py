"""TVM's RPC tracker and servers, started as child processes that can be stopped as a group.

Tuning measures candidate kernels on the boards themselves: every board runs TVM's RPC server
(``python -m tvm.exec.rpc_server``) and registers with one tracker (``python -m tvm.exec.rpc_tracker``)
under a key such as ``rk3288``; the tuner asks the tracker for a free board of that key for each
candidate. A server executes whatever shared library it is sent, so both bind 127.0.0.1 unless the
caller names another address explicitly *and* passes ``allow_remote=True``.

Each process runs in its own session (process group): TVM's server forks a worker per session and
the tracker runs in a PopenWorker child, so stopping the group is the only way to stop them all.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TuningError
from .requirements import require_tuning_dependencies

LOOPBACK = "127.0.0.1"
DEFAULT_TRACKER_PORT = 9190
DEFAULT_SERVER_PORT = 9090
# A tracker started in the same breath as the tuner (`edgetvm rpc tracker & edgetvm tune ...`) needs a
# moment to listen; longer than this, a refused connection means there is no tracker.
TRACKER_START_GRACE = 3.0

REMOTE_WARNING = (
    "WARNING: {what} binds {host}, reachable from other machines. A TVM RPC server loads and runs any "
    "shared library a client uploads, with this user's rights, and has no authentication: keep it on a "
    "private network that only the tuning host can reach."
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str, allow_remote: bool, what: str) -> str | None:
    """Refuse a non-loopback bind address without ``allow_remote``; return the warning text otherwise."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise TuningError(
            f"{what}: refusing to bind {host} without --allow-remote; the server executes uploaded code. "
            f"Bind 127.0.0.1 (the default), or pass --allow-remote on a private network"
        )
    return REMOTE_WARNING.format(what=what, host=host)


def parse_address(text: str, default_port: int = DEFAULT_TRACKER_PORT) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host, int(port)
    except ValueError:
        raise TuningError(f"tracker address {text!r}: write HOST:PORT, for example 127.0.0.1:9190") from None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class RPCProcess:
    """One tracker or server child process, leader of its own process group."""

    kind: str
    host: str
    port: int
    proc: subprocess.Popen
    log_path: Path | None = None
    key: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                # The leader is gone; its forked session workers may not be: kill the group once more.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "RPCProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), so no server outlives its owner."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(kind: str, argv: list[str], host: str, port: int, log_path: Path | None, env: dict | None,
           key: str = "") -> RPCProcess:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    finally:
        if log_path:
            out.close()
    return RPCProcess(kind, host, port, proc, log_path, key)


def _wait_listening(process: RPCProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise TuningError(f"the RPC {process.kind} on {process.address} exited at start:\n{process.log_tail()}")
        if _port_open(LOOPBACK if process.host in ("0.0.0.0", "") else process.host, process.port):
            return
        time.sleep(0.1)
    process.stop()
    raise TuningError(f"the RPC {process.kind} did not listen on {process.address} within {timeout:.0f} s")


def start_tracker(host: str = LOOPBACK, port: int | None = None, *, allow_remote: bool = False,
                  log_path: str | os.PathLike | None = None, timeout: float = 30.0) -> RPCProcess:
    """Start ``tvm.exec.rpc_tracker`` on ``host:port`` (a free port when ``port`` is None)."""
    check_bind_host(host, allow_remote, "the RPC tracker")
    require_tuning_dependencies("the RPC tracker")
    port = port or free_port(LOOPBACK if is_loopback(host) else "")
    tracker = _spawn("tracker", ["tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
                                 "--port-end", str(port + 1)],
                     host, port, Path(log_path) if log_path else None, None)
    _wait_listening(tracker, timeout)
    return tracker


def start_server(tracker: str, key: str, *, host: str = LOOPBACK, port: int | None = None,
                 allow_remote: bool = False, num_threads: int | None = None,
                 log_path: str | os.PathLike | None = None, timeout: float = 30.0,
                 wait_registered: bool = True) -> RPCProcess:
    """Start ``tvm.exec.rpc_server`` registered with ``tracker`` (HOST:PORT) under ``key``."""
    check_bind_host(host, allow_remote, "the RPC server")
    require_tuning_dependencies("the RPC server")
    if not key:
        raise TuningError("an RPC server needs a --key naming the kind of board, for example rk3288")
    port = port or free_port(LOOPBACK if is_loopback(host) else "")
    env = dict(os.environ)
    if num_threads:
        env["TVM_NUM_THREADS"] = str(num_threads)
    server = _spawn("server", ["tvm.exec.rpc_server", "--tracker", tracker, "--key", key, "--host", host,
                               "--port", str(port), "--port-end", str(port + 1)],
                    host, port, Path(log_path) if log_path else None, env, key)
    # Probing the server's port would not do: it reads our probe as a broken client and re-registers.
    if wait_registered:
        thost, tport = parse_address(tracker)
        deadline = time.monotonic() + timeout
        while port not in [b["port"] for b in list_boards(thost, tport, key)]:
            if time.monotonic() > deadline or not server.alive():
                server.stop()
                raise TuningError(f"the RPC server on {server.address} did not register with the tracker "
                                  f"{tracker}:\n{server.log_tail()}")
            time.sleep(0.1)
    return server


def reach_tracker(host: str, port: int, grace: float = TRACKER_START_GRACE, timeout: float = 3.0) -> None:
    """Fail in seconds, in one line, when nothing answers at ``host:port``.

    TVM's own client retries a refused connection for 60 s with a warning every 5 s, and a silent
    host would hang its connect for minutes; this opens one TCP connection first, with a deadline.
    """
    deadline = time.monotonic() + grace
    while True:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except ConnectionRefusedError as exc:
            if time.monotonic() >= deadline:
                reason = exc.strerror or "connection refused"
                break
        except socket.gaierror as exc:
            reason = f"unknown host: {exc.strerror}"
            break
        except TimeoutError:
            reason = f"no answer within {timeout:.0f} s"
            break
        except OSError as exc:
            reason = exc.strerror or str(exc)
            break
        time.sleep(0.2)
    raise TuningError(f"cannot reach the RPC tracker at {host}:{port} ({reason}); start one with "
                      f"`edgetvm rpc tracker`, or check --tracker")


def list_boards(tracker_host: str, tracker_port: int, key: str, timeout: float = 10.0) -> list[dict]:
    """The servers the tracker lists under ``key``: [{'host', 'port', 'key'}], free or busy."""
    from tvm import rpc

    reach_tracker(tracker_host, tracker_port)
    try:
        session = rpc.connect_tracker(tracker_host, tracker_port)
        summary = session.summary()
        session.close()
    except (OSError, RuntimeError, ValueError) as exc:
        raise TuningError(
            f"cannot reach the RPC tracker at {tracker_host}:{tracker_port} ({exc}); start one with "
            f"`edgetvm rpc tracker`"
        ) from None
    boards = []
    for info in summary.get("server_info", []):
        # The tracker stores "server:KEY" plus the server's listening address.
        _, _, server_key = str(info.get("key", "")).partition(":")
        if server_key == key:
            addr = info.get("addr", [None, None])
            boards.append({"host": addr[0], "port": int(addr[1]), "key": key})
    return boards
