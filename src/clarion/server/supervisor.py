"""``clarion serve --workers N``: N processes share the port (SO_REUSEPORT) and form one
cluster through Redis, under a parent that only supervises them.

The parent passes signals on: SIGTERM and SIGINT stop every worker (each drains as a
single process does) and then the parent; SIGHUP (``systemctl reload``) goes to every
worker, each of which loads its TLS certificate again, and the parent keeps running.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import msgspec

from clarion import logs
from clarion.config import Settings
from clarion.server.serve import print_listening, run

log = logging.getLogger("clarion.server")


def _worker(settings: Settings) -> None:
    logs.setup(settings.server.log_level, worker=True)
    run(settings, announce=False, reuse_port=True, admin=False)  # one console: not per worker


def run_workers(settings: Settings, workers: int) -> None:
    """N processes share the port (SO_REUSEPORT) and form one cluster through Redis.

    The parent only supervises: a worker that dies is started again, and the cluster
    cleans up after the dead one as after any dead node (its lease runs out).
    """
    server = settings.server
    # Hold the port (SO_REUSEPORT, not listening) so that port 0 resolves once for all.
    holder = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((server.host, server.port))
    port = holder.getsockname()[1]
    settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(server, port=port))
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []

    def start_worker(index: int) -> multiprocessing.process.BaseProcess:
        worker_settings = settings
        if settings.metrics.port:
            metrics_config = msgspec.structs.replace(
                settings.metrics, port=settings.metrics.port + index
            )
            worker_settings = msgspec.structs.replace(settings, metrics=metrics_config)
        child = context.Process(target=_worker, args=(worker_settings,), daemon=False)
        with _sighup_ignored():
            child.start()
        return child

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    def reload(signum: int, frame: object) -> None:
        # No is_alive() here: it reaps, and the main loop may be reaping the same child.
        pids = [child.pid for child in children if child.pid is not None]
        log.info("SIGHUP: reloading the TLS certificate in %d worker(s)", len(pids))
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    children.extend(start_worker(index) for index in range(workers))
    _wait_until_up(server.host, port, tls=server.tls_cert is not None)
    print(f"Clarion: {workers} workers sharing the port", flush=True)
    print_listening(server.host, port, settings)
    while True:
        for index, child in enumerate(children):
            child.join(timeout=0.2)
            if child.is_alive() or stopping:
                continue
            log.error("worker %s exited with %s; starting a new one", child.pid, child.exitcode)
            children[index] = start_worker(index)
        if stopping:
            for child in children:
                child.join(timeout=15)
                if child.is_alive():
                    child.kill()
            holder.close()
            return


@contextmanager
def _sighup_ignored() -> Iterator[None]:
    """Start a worker with SIGHUP ignored: an ignored signal stays ignored across the
    exec of the new process, so a reload that reaches it before its own handler is set
    (it reads the certificate as it starts anyway) cannot kill it. The parent's handler
    is back once the worker is started."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _wait_until_up(host: str, port: int, tls: bool, timeout: float = 30.0) -> None:
    """Return once a worker answers ``/up`` (over TLS when the workers serve it: the
    probe only asks whether one is up, so it checks no certificate)."""
    probe_context = None
    if tls:
        probe_context = ssl.create_default_context()
        probe_context.check_hostname = False
        probe_context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as raw:
                probe = (
                    probe_context.wrap_socket(raw, server_hostname=host) if probe_context else raw
                )
                probe.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
