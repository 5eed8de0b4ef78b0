"""`subnetsearch serve`: the query service for a fleet, a read-only HTTP API over one store (FastAPI
on uvicorn; optional extra `serve`).

    GET /devices                                   the recorded devices
    GET /devices/{name}/front?objectives=...       the stored noise-aware front (as `front --json`)
    GET /devices/{name}/best?max_latency_ms=...    the best mode under a budget (as `best --json`)
    GET /devices/{name}/front/artifact?format=...  the front in one file (as `export --front`)
    GET /modes/{id}/artifact?device=&format=...    one mode's static file (as `export`)
    GET /openapi.json                              the schema

Artifacts are exported once per (supernet, mode(s), device, format), kept in a cache folder and
served with their SHA-256 (`ETag`, `X-Content-SHA256`). The store is opened read-only (the database
refuses writes); a bearer token is required when the service is bound beyond loopback or asked to.
Bad queries get a 4xx whose `detail` names the problem."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request,
# query types) at definition time, and those names are imported inside `create_app`, where the
# optional extra is needed.

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from subnetsearch.errors import InputError, SubnetsearchError

# artifact format -> (suffix of the file served, media type)
ARTIFACTS = {"onnx": (".onnx", "application/octet-stream"), "executorch": (".pte", "application/octet-stream"),
             "openvino": (".zip", "application/zip"), "json": (".json", "application/json")}
# front artifact format -> (suffix served, media type, the file export writes): the .pte's and the .xml's
# manifests are beside them, so those are served zipped with it; the ONNX model carries its own
FRONT_ARTIFACTS = {"onnx": (".onnx", "application/octet-stream", "front.onnx"),
                   "executorch": (".pte.zip", "application/zip", "front.pte"),
                   "openvino": (".xml.zip", "application/zip", "front.xml")}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(path: Path) -> str:
    """A new bearer token; only its SHA-256 is kept, in `path` (readable by its owner only). The
    caller shows the token once."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token_digest(token) + "\n")
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)
    return token


def read_token_digest(path: Path) -> str:
    try:
        digest = path.read_text().strip()
    except OSError as error:
        raise InputError(f"cannot read the token file {path}: {error.strerror}") from None
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InputError(f"{path} does not hold a token's SHA-256: create a new token (serve --new-token)")
    return digest


class ArtifactCache:
    """Exports, once each: concurrent requests for the same artifact wait for the first one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: dict, suffix: str, make: Any) -> tuple[Path, str]:
        """The cached file for `key` (made by `make(path)` if absent) and its SHA-256."""
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        path = self.folder / f"{name}{suffix}"
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if not path.exists():
                with tempfile.TemporaryDirectory(dir=self.folder) as work:
                    made = make(Path(work))
                    os.replace(made, path)
            digest_file = path.with_suffix(path.suffix + ".sha256")
            if not digest_file.exists():
                digest_file.write_text(hashlib.sha256(path.read_bytes()).hexdigest())
            return path, digest_file.read_text()


def create_app(storage: str | None, cache: Path, token_sha256: str | None = None) -> Any:
    """The FastAPI application over the store at `storage` (opened read-only). With `token_sha256`,
    every request needs `Authorization: Bearer <token>` whose SHA-256 it is."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import FileResponse, JSONResponse

    from subnetsearch.devices import DeviceError
    from subnetsearch.search import export_front, export_mode
    from subnetsearch.storage import Budget, StorageError, Store

    store = Store(storage)
    store.make_read_only()
    artifacts = ArtifactCache(cache)

    app = FastAPI(title="subnetsearch", summary="Which operating mode a device should run, and the file to run it",
                  docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def authorized(request: Request, call_next: Any) -> Any:
        """Every path, the schema included, needs the token when one is set; only reads are served."""
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"detail": "this service is read-only: GET and HEAD only"}, 405,
                                headers={"Allow": "GET, HEAD"})
        if token_sha256 is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(token.strip()), token_sha256):
                return JSONResponse({"detail": "a bearer token is required: Authorization: Bearer <token>"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    def answer(call: Any) -> Any:
        try:
            return call()
        except DeviceError as error:
            raise HTTPException(404, str(error)) from None
        except InputError as error:
            raise HTTPException(400, str(error)) from None
        except StorageError as error:
            raise HTTPException(503, str(error)) from None
        except SubnetsearchError as error:
            raise HTTPException(422, str(error)) from None

    def served(path: Path, digest: str, filename: str, media: str) -> FileResponse:
        return FileResponse(path, media_type=media, filename=filename,
                            headers={"ETag": f'"{digest}"', "X-Content-SHA256": digest})

    @app.get("/devices")
    def devices() -> list[dict]:
        """The recorded devices and how each measures."""
        return answer(lambda: [device.to_dict() for device in store.list_devices()])

    @app.get("/devices/{name}/front")
    def front(name: str, objectives: str = "accuracy,latency", supernet: str | None = None) -> list[dict]:
        """The device's stored noise-aware Pareto front (rows as `subnetsearch front --json`)."""
        def call() -> list[dict]:
            supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
            return [_row(row) for row in store.get_front(name, objectives, supernet_hash)]
        return answer(call)

    @app.get("/devices/{name}/best")
    def best(name: str, max_latency_ms: float | None = None, max_macs: float | None = None,
             max_energy_mj: float | None = None, min_accuracy: float | None = None, objective: str = "accuracy",
             supernet: str | None = None) -> dict:
        """The best stored mode under the budget, by the rule of `subnetsearch best` (`best` is null
        when nothing fits; `closest` then lists the nearest)."""
        def call() -> dict:
            budget = Budget(max_latency_ms, max_macs, max_energy_mj, min_accuracy)
            supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
            result = store.best_mode(name, budget, objective, supernet_hash)
            return {"best": _row(result.best) if result.best else None,
                    "closest": [_row(row) for row in result.closest], "front_size": result.front_size,
                    "rule": result.rule, "confidence": result.confidence}
        return answer(call)

    @app.get("/modes/{mode_id}/artifact")
    def mode_artifact(mode_id: str, device: str = Query(..., description="the device it was evaluated on"),
                      format: str = "onnx", supernet: str | None = None) -> FileResponse:
        """One stored mode's static file (`onnx`, `executorch` .pte, `openvino` .xml+.bin zipped, `json`)."""
        if format not in ARTIFACTS:
            raise HTTPException(400, f"format must be one of {sorted(ARTIFACTS)}, got {format!r}")
        suffix, media = ARTIFACTS[format]

        def call() -> tuple[Path, str, str]:
            found = store.find_evaluations(device, mode_id, supernet)
            if not found:
                raise HTTPException(404, f"no stored mode {mode_id!r} on device {device}")
            evaluation = found[0]
            key = {"mode": evaluation.mode_id, "supernet": evaluation.supernet_hash, "device": device,
                   "settings": evaluation.settings_key, "format": format}

            def make(work: Path) -> Path:
                if format != "openvino":
                    return export_mode(store, evaluation, work / f"mode{suffix}", format)
                export_mode(store, evaluation, work / "mode.xml", format)
                return _zipped(work, ["mode.xml", "mode.bin"])
            path, digest = artifacts.get(key, suffix, make)
            return path, digest, f"mode-{evaluation.mode_id}{suffix}"
        path, digest, filename = answer(call)
        return served(path, digest, filename, media)

    @app.get("/devices/{name}/front/artifact")
    def front_artifact(name: str, format: str = "onnx", modes: str | None = None,
                       supernet: str | None = None) -> FileResponse:
        """The device's front in one file that switches modes (`subnetsearch export --front`):
        `onnx`, `executorch` (.pte) or `openvino` (.xml, .bin and manifest zipped)."""
        if format not in FRONT_ARTIFACTS:
            raise HTTPException(400, f"a front artifact's format is one of {list(FRONT_ARTIFACTS)}, got {format!r}")
        ids = [part.strip() for part in modes.split(",") if part.strip()] if modes else None
        suffix, media, main = FRONT_ARTIFACTS[format]

        def call() -> tuple[Path, str]:
            supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
            if ids:
                rows = [row for mode in ids for row in store.find_evaluations(name, mode, supernet_hash)[:1]]
            else:
                rows = [row for row, _ in store.best_candidates(name, supernet_hash)]
            key = {"front": sorted(f"{r.supernet_hash}:{r.mode_id}:{r.settings_key}" for r in rows), "device": name,
                   "format": format, "asked": ids}

            def make(work: Path) -> Path:
                written = export_front(store, name, work / main, None, ids, supernet_hash)
                if len(written.files) == 1:
                    return written.path
                return _zipped(work, [p.name for p in written.files], suffix)
            return artifacts.get(key, suffix, make)
        path, digest = answer(call)
        return served(path, digest, f"front-{name}{suffix}", media)

    app.state.store = store
    return app


def _row(row: Any) -> dict:
    return asdict(row)


def _zipped(folder: Path, names: list[str], suffix: str = ".zip") -> Path:
    archive = folder / f"artifact{suffix}"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name in names:
            bundle.write(folder / name, name)
    return archive
