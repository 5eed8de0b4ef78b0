"""`subnetsearch serve`: the read-only query service (subnetsearch.service) on uvicorn."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from subnetsearch.cli._common import console, fail
from subnetsearch.cli._devices import STORAGE_HELP, open_store
from subnetsearch.errors import SubnetsearchError


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "subnetsearch"


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "subnetsearch"


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only; any other address "
                                               "requires a bearer token)."),
    port: int = typer.Option(8000, help="Port (0: any free port)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    require_token: bool = typer.Option(False, "--require-token", help="Require a bearer token on loopback too."),
    new_token: bool = typer.Option(False, "--new-token", help="Make a new token (shown once; only its SHA-256 is "
                                                              "kept) and require it; the old one stops working."),
    token_file: Path | None = typer.Option(None, help="Where the token's SHA-256 is kept "
                                                      "[~/.config/subnetsearch/serve-token.sha256]."),
    cache: Path | None = typer.Option(None, help="Folder of the exported artifacts served "
                                                 "[~/.cache/subnetsearch/serve/<store>]."),
    workers: int = typer.Option(1, help="Server processes sharing the port (each with its own read-only "
                                        "connection to the store); more than 1 answers concurrent clients on "
                                        "several cores."),
) -> None:
    """Serve the store read-only over HTTP: devices, fronts, the best mode under a budget, and the
    files to deploy (one mode, or a device's front in one file). OpenAPI schema at /openapi.json."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        fail("serve needs FastAPI and uvicorn, which are not installed here: pip install 'subnetsearch[serve]'")
    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535 (0: any free port), got {port}")
    if not 1 <= workers <= 64:
        fail(f"--workers must be in 1..64, got {workers}")
    from subnetsearch.service import LOOPBACK, create_app, read_token_digest
    from subnetsearch.service import new_token as make_token

    token_file = token_file or _config_home() / "serve-token.sha256"
    required = require_token or new_token or host not in LOOPBACK
    digest = None
    if required:
        try:
            if new_token or not token_file.exists():
                token = make_token(token_file)
                console.print(f"bearer token (shown this once; only its SHA-256 is kept, in {token_file}):")
                print(token, flush=True)
            digest = read_token_digest(token_file)
        except (SubnetsearchError, OSError) as error:
            fail(str(error))
    store = open_store(storage)  # creates or upgrades the schema here; the service then opens it read-only
    url = store.url
    store.dispose()
    cache = cache or _cache_home() / "serve" / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        app = create_app(storage, cache, digest)
    except (SubnetsearchError, OSError) as error:
        fail(str(error))
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it a kept-alive
        # connection's responses wait ~40 ms for the client's delayed ACK (Nagle)
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind((host, port))
        listener.listen(2048)  # connections made from now on wait in the backlog until uvicorn accepts them
    except OSError as error:
        fail(f"cannot serve on {host}:{port}: {error.strerror or error}")
    bound = listener.getsockname()[1]
    console.print(f"subnetsearch service for {url} at http://{host}:{bound} (read-only; "
                  f"{'bearer token required' if digest else 'no token: loopback only'}"
                  f"{f'; {workers} worker processes' if workers > 1 else ''}; Ctrl-C stops it)")
    if workers == 1:
        _run(app, listener)
    else:
        _run_workers(workers, lambda: create_app(storage, cache, digest), listener)
    console.print("service stopped")


def _run(app: Any, listener: socket.socket) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5,
                                           timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass


def _run_workers(workers: int, make_app: Callable[[], Any], listener: socket.socket) -> None:
    """`workers` forked processes, each with its own application (its own read-only engine: a
    connection pool must not cross a fork) accepting on the one listening socket. Ctrl-C (SIGINT to
    the process group) or SIGTERM to this process stops them all; one that dies stops the others."""
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.default_int_handler)
                _run(make_app(), listener)
            except BaseException:  # noqa: BLE001 - a worker reports and exits, whatever stopped it
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    listener.close()  # the workers hold it

    def stop(*_: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    failed = []
    try:
        while children:
            try:
                pid, status = os.wait()
            except KeyboardInterrupt:
                stop()
                continue
            children.remove(pid)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(pid)
                stop()
    finally:
        stop()
    if failed:
        fail(f"worker process {failed[0]} stopped with an error; the service stopped")
