"""`subnetsearch serve` as a fleet meets it: a real uvicorn process, a real HTTP client (urllib) on
loopback. Every endpoint answers what the command line answers; artifacts come with their digest
and run; tokens are required where they must be and never printed again; bad queries get a 4xx
naming the problem; the service cannot write to the store, and reads while a search writes."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.deploy import DynamicModel
from subnetsearch.storage import Budget, Store

pytest.importorskip("fastapi", reason="the service's extra is not installed: pip install 'subnetsearch[serve]'")
runner = CliRunner()
SUBNETSEARCH = str(Path(sys.executable).parent / "subnetsearch")


def _lower(headers) -> dict:  # noqa: ANN001 - http.client's message
    return {name.lower(): value for name, value in headers.items()}


class Service:
    def __init__(self, process: subprocess.Popen, address: str, token: str | None, output: list[str]) -> None:
        self.process, self.address, self.token, self.output = process, address, token, output

    def get(self, path: str, token: str | None = None, timeout: float = 120) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.address + path)
        if token or self.token:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _lower(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, _lower(error.headers), error.read()

    def json(self, path: str) -> object:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


def start(storage: str, tmp_path: Path, *args: str) -> Service:
    environment = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = subprocess.Popen([SUBNETSEARCH, "serve", "--port", "0", "--storage", storage, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        found = re.search(r"at (http://[\d.]+:\d+)", line)
        if found:
            token = next((o.strip() for o in output if re.fullmatch(r"[\w-]{40,}", o.strip())), None)
            return Service(process, found.group(1), token, output)
    process.kill()
    raise AssertionError(f"the service did not start within 60 s: {''.join(output)}")


def stop(service: Service) -> str:
    service.process.terminate()
    rest, _ = service.process.communicate(timeout=30)
    return "".join(service.output) + (rest or "")


@pytest.fixture(scope="module")
def stored(trained, tmp_path_factory) -> tuple[str, list[str]]:
    folder = tmp_path_factory.mktemp("serve")
    storage = f"sqlite:///{folder / 'store.db'}"
    assert runner.invoke(app, ["devices", "add", "edge", "--runtime", "onnxruntime", "--threads", "1", "--repeats", "1",
                               "--storage", storage]).exit_code == 0
    searched = runner.invoke(app, ["search", "--checkpoint", str(trained("nested") / "supernet.pt"), "--strategy",
                                   "optuna", "--sampler", "random", "--trials", "5", "--fidelity", "full",
                                   "--objectives", "accuracy,latency", "--device", "edge", "--storage", storage])
    assert searched.exit_code == 0, searched.output
    store = Store(storage)
    modes = sorted({e.mode_id for e in store.list_evaluations("edge")})
    store.dispose()
    return storage, modes


@pytest.fixture
def service(stored, tmp_path) -> Iterator[Service]:
    running = start(stored[0], tmp_path)
    yield running
    stop(running)


@pytest.mark.slow
def test_every_endpoint_answers_what_the_command_line_answers(service, stored, tmp_path) -> None:
    storage, modes = stored
    store = Store(storage)
    assert [d["name"] for d in service.json("/devices")] == [d.name for d in store.list_devices()]
    front = service.json("/devices/edge/front")
    assert [row["mode_id"] for row in front] == [e.mode_id for e in store.get_front("edge", "accuracy,latency")]
    cli_front = runner.invoke(app, ["front", "--device", "edge", "--json", "--storage", storage])
    assert [row["mode_id"] for row in json.loads(cli_front.output)] == [row["mode_id"] for row in front]
    limit = max(row["latency_ms"] for row in front) * 2
    for query, budget in [("", Budget()), (f"?max_latency_ms={limit}", Budget(max_latency_ms=limit)),
                          ("?min_accuracy=0.0&objective=macs", Budget(min_accuracy=0.0))]:
        answer = service.json(f"/devices/edge/best{query}")
        expected = store.best_mode("edge", budget, "macs" if "macs" in query else "accuracy").best
        assert answer["best"]["mode_id"] == expected.mode_id and answer["rule"]
    nothing = service.json("/devices/edge/best?max_macs=1")
    assert nothing["best"] is None and nothing["closest"]
    schema = service.json("/openapi.json")
    assert {"/devices", "/devices/{name}/best", "/modes/{mode_id}/artifact", "/devices/{name}/front/artifact"} <= \
        set(schema["paths"])
    # one mode's ONNX, with its digest; the second request is the cached file
    status, headers, body = service.get(f"/modes/{modes[0][:8]}/artifact?device=edge&format=onnx")
    assert status == 200 and headers["x-content-sha256"] == hashlib.sha256(body).hexdigest()
    again = service.get(f"/modes/{modes[0]}/artifact?device=edge&format=onnx")
    assert again[2] == body and again[1]["etag"] == headers["etag"]
    described = service.json(f"/modes/{modes[0]}/artifact?device=edge&format=json")
    assert described["mode_id"] == modes[0]
    status, headers, bundle = service.get(f"/modes/{modes[0]}/artifact?device=edge&format=openvino")
    assert status == 200 and sorted(zipfile.ZipFile(io.BytesIO(bundle)).namelist()) == ["mode.bin", "mode.xml"]
    # the front in one file: it runs on the device, every mode the store's front holds for `best`
    status, headers, data = service.get("/devices/edge/front/artifact?format=onnx")
    assert status == 200 and headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()
    (tmp_path / "front.onnx").write_bytes(data)
    model = DynamicModel.load(tmp_path / "front.onnx")
    assert sorted(model.modes) == sorted(row.mode_id for row, _ in store.best_candidates("edge"))
    assert model(np.zeros(model.manifest.input_shape, np.float32)).shape[0] == model.manifest.input_shape[0]
    status, _, bundle = service.get(f"/devices/edge/front/artifact?format=executorch&modes={','.join(modes[:2])}")
    if status == 200:  # the executorch extra is installed
        names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
        assert sorted(names) == ["front.pte", "front.pte.manifest.json"]
    store.dispose()


def test_bad_queries_get_a_4xx_that_names_the_problem(service) -> None:
    cases = [("/devices/nowhere/front", 404, "unknown device 'nowhere'"),
             ("/devices/nowhere/best", 404, "unknown device 'nowhere'"),
             ("/devices/edge/best?max_latency_ms=-1", 400, "max_latency_ms must be positive"),
             ("/devices/edge/best?min_accuracy=7", 400, "min_accuracy must be in [0, 1]"),
             ("/devices/edge/best?max_latency_ms=fast", 422, "max_latency_ms"),
             ("/devices/edge/best?objective=speed", 400, "unknown objective 'speed'"),
             ("/devices/edge/front?objectives=accuracy,colour", 400, "colour"),
             ("/modes/zzzz/artifact?device=edge", 404, "no stored mode 'zzzz'"),
             ("/modes/abc/artifact", 422, "device"),
             ("/modes/abc/artifact?device=edge&format=tflite", 400, "format must be one of"),
             ("/devices/edge/front/artifact?format=json", 400, "a front artifact's format is one of"),
             ("/devices/edge/front/artifact?modes=zzzz", 422, "no stored mode 'zzzz'")]
    for path, status, message in cases:
        got, _, body = service.get(path)
        assert got == status and message in body.decode(), (path, got, body[:300])


def test_a_token_is_required_where_it_must_be_and_never_printed_again(stored, tmp_path) -> None:
    storage, _ = stored
    first = start(storage, tmp_path, "--require-token")
    assert first.token is not None
    assert first.get("/devices")[0] == 200
    status, headers, body = first.get("/devices", token="wrong")
    assert status == 401 and headers["www-authenticate"] == "Bearer" and b"bearer token is required" in body
    anonymous = urllib.request.Request(first.address + "/devices")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    assert first.get("/openapi.json", token="wrong")[0] == 401
    log = stop(first)
    kept = (tmp_path / "config" / "subnetsearch" / "serve-token.sha256")
    assert kept.read_text().strip() == hashlib.sha256(first.token.encode()).hexdigest()
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    second = start(storage, tmp_path, "--require-token")  # the same token; not shown again
    assert second.token is None
    assert second.get("/devices", token=first.token)[0] == 200
    assert first.token not in stop(second) and log.count(first.token) == 1


def test_the_service_cannot_write_to_the_store(service, stored) -> None:
    opened = Store(stored[0])  # as the service opens it: the database itself refuses writes
    opened.make_read_only()
    with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
        opened.remove_device("edge")
    opened.dispose()
    assert [d.name for d in Store(stored[0]).list_devices()] == ["edge"]
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(service.address + "/devices", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405
    assert service.process.poll() is None


@pytest.mark.slow
def test_readers_are_answered_while_a_search_writes_to_the_same_postgresql_store(trained, postgres_store_url,
                                                                               tmp_path) -> None:
    storage = postgres_store_url
    assert runner.invoke(app, ["devices", "add", "edge", "--runtime", "onnxruntime", "--threads", "1", "--repeats", "1",
                               "--storage", storage]).exit_code == 0
    search = ["search", "--checkpoint", str(trained("nested") / "supernet.pt"), "--strategy", "optuna", "--sampler",
              "random", "--fidelity", "full", "--objectives", "accuracy,latency", "--device", "edge",
              "--storage", storage]
    assert runner.invoke(app, [*search, "--trials", "2"]).exit_code == 0
    service = start(storage, tmp_path)
    writer = subprocess.Popen([SUBNETSEARCH, *search, "--trials", "8", "--name", "concurrent"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answers: list[int] = []
    try:
        def read(_: int) -> int:
            return service.get("/devices/edge/best?min_accuracy=0")[0]

        with ThreadPoolExecutor(8) as pool:
            while writer.poll() is None:
                answers.extend(pool.map(read, range(16)))
        assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    finally:
        writer.kill()
        stop(service)
    assert answers and set(answers) == {200}
    store = Store(storage)
    assert store.get_search("concurrent").status == "finished"
    store.make_read_only()  # as the service opened it: PostgreSQL refuses the write
    with pytest.raises(Exception, match="read-only transaction"):
        store.remove_device("edge")
    store.dispose()


def test_several_worker_processes_share_the_port_and_stop_together(stored, tmp_path) -> None:
    storage, _ = stored
    running = start(storage, tmp_path, "--workers", "2")
    pid = running.process.pid
    deadline = time.monotonic() + 30  # the workers are forked once the address is printed
    while len(workers := [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]) < 2 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2 and "2 worker processes" in "".join(running.output)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # concurrent clients, every one answered
        answers = list(pool.map(lambda _: running.json("/devices"), range(32)))
    assert all([d["name"] for d in answer] == ["edge"] for answer in answers)
    stop(running)  # SIGTERM to the parent stops every worker
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{worker}").exists() for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{worker}").exists() for worker in workers)
    refused = runner.invoke(app, ["serve", "--workers", "0", "--storage", storage])
    assert refused.exit_code == 2 and "--workers must be in 1..64" in refused.output
