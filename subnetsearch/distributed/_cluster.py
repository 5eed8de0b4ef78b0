"""Connecting to Ray: the embedded local instance (sized for this host) or a user's cluster, and the
checks a distributed search makes before it starts (device nodes, a storage URL every node reaches).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from sqlalchemy.engine import make_url

from subnetsearch.devices import Device
from subnetsearch.errors import SubnetsearchError

OBJECT_STORE_BYTES = 200 * 1024**2  # small hosts: Ray's default (30% of memory) starves training and tests
ADDRESS_HELP = ("Ray cluster: none = a local Ray instance on this machine (or the cluster of `ray job submit`, "
                "from $RAY_ADDRESS); auto = the cluster started on this machine with `ray start`; "
                "host:port or ray://host:port = that cluster.")


class ClusterError(SubnetsearchError, RuntimeError):
    """The Ray cluster cannot run this search as asked."""


def connect(address: str | None = None, device_resources: Iterable[str] = ()) -> str:
    """Attach this process to Ray once. Without an address: $RAY_ADDRESS if set (a `ray job submit`
    job), else a local instance with this host's CPUs, a 200 MB object store, no Ray dashboard and
    the given device resources (the local machine is those devices' node). Returns a description."""
    import ray

    if ray.is_initialized():
        return "the Ray instance this process is attached to"
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # Ray runs its workers at nice 15 by default; here they are the search itself, and at nice 15
        # any other process on a shared host starves them
        # (seen here: a test run beside a training run took 19 minutes instead of 4).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address="local", num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False, resources={name: 1 for name in device_resources}, log_to_driver=False,
                 logging_level=logging.WARNING)
        return f"a local Ray instance ({os.cpu_count()} CPUs)"
    check_reachable(address)
    if os.environ.get("RAY_AUTH_MODE") != "token" and requires_token(address):
        raise ClusterError(f"the Ray cluster at {address} requires token authentication (it refused a call without "
                           "a token): export RAY_AUTH_MODE=token and give this machine the cluster's token (a copy "
                           "of the head's ~/.ray/auth_token in ~/.ray/, or RAY_AUTH_TOKEN), then run this again")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as error:  # ConnectionError, auth errors, timeouts: Ray raises several kinds
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {str(error).strip()[:300]}"
                           f"{auth_hint(str(error))}") from error
    return f"the Ray cluster at {address}"


def auth_hint(error: str) -> str:
    """Why a connection to a token-auth cluster fails: Ray 2.60 reports `InvalidAuthToken` only in
    its C++ log lines; the Python exception says "Failed to connect to Ray cluster"."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return ""
    token = os.path.expanduser("~/.ray/auth_token")
    has_token = os.path.exists(token)
    if "auth" in error.lower() or "token" in error.lower() or has_token:
        return (". The likely cause: the cluster uses token auth (Ray 2.60's `ray start` default"
                + (f"; this machine has a token in {token}" if has_token else "")
                + ") and this process lacks RAY_AUTH_MODE=token: export it (every head, worker and driver needs it)")
    return ""


def requires_token(address: str, timeout: float = 5.0) -> bool:
    """Whether the Ray head (GCS) at host:port refuses a call that carries no authentication token
    (gRPC status UNAUTHENTICATED): Ray's own driver, refused, retries for about 25 s and then says
    only that it cannot connect. A Ray Client address (ray://) is not asked."""
    if address == "auto" or address.startswith("ray://"):
        return False
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=bytes,
                                   response_deserializer=bytes)
        call(b"", timeout=timeout)
    except grpc.RpcError as error:
        return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
    finally:
        channel.close()
    return False


def speaks_grpc(connection: socket.socket) -> bool:
    """Whether the server on an open connection is HTTP/2 (gRPC): Ray's GCS and Ray Client servers
    are; a Redis or web server on the port is not, and Ray would retry its connection for minutes.
    Sends the HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers with a
    SETTINGS frame (within the connection's timeout)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    reply = b""
    try:
        connection.sendall(preface)
        while len(reply) < 9:
            chunk = connection.recv(9 - len(reply))
            if not chunk:
                break
            reply += chunk
    except OSError:
        return False
    return len(reply) == 9 and reply[3] == 0x04  # frame type SETTINGS


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port (or ray://host:port) address must accept a TCP connection: Ray itself retries an
    unreachable address for minutes before giving up."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}: expected auto, host:port or ray://host:port")
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        raise ClusterError(f"no Ray cluster answers at {address} ({error.strerror or error}); start its head with "
                           f"`RAY_AUTH_MODE=token ray start --head --port={port}` or check the address") from error
    with connection:
        grpc = speaks_grpc(connection)
    if not grpc:
        raise ClusterError(f"something listens at {address}, but it is not a Ray head (no gRPC answer within "
                           f"{timeout:g} s; on many machines 6379, Ray's default port, is a Redis server): start the "
                           "head on a free port (`ray start --head --port=6390`) and give that address")


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def has_device_node(device: Device) -> bool:
    import ray

    return ray.cluster_resources().get(device.ray_resource, 0) >= 1


def head_address() -> str:
    """The GCS address workers join (`ray start --address=...`), as the connected cluster reports it."""
    import ray

    try:
        return ray.get_runtime_context().gcs_address or "<head-ip>:<head-port>"
    except Exception:  # a Ray Client connection does not expose it
        return "<head-ip>:<head-port>"


def missing_device_message(device: Device) -> str:
    return (f"no node of the Ray cluster advertises the resource {device.ray_resource!r}, so latency on "
            f"{device.name} cannot be measured. Start a Ray node on that device and join it to the cluster: "
            f"RAY_AUTH_MODE=token ray start --address={head_address()} --resources='{{\"{device.ray_resource}\": 1}}' "
            "(with subnetsearch installed there); or search without measuring: --latency predicted (the device's "
            "lookup table) or a cost and objectives without latency (--cost macs --objectives accuracy,macs)")


def node_addresses() -> set[str]:
    import ray

    return {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}


def shared_storage_url(url: str) -> str:
    """The storage URL as every Ray worker must see it: a SQLite file by absolute path (workers do not
    share the driver's working directory), and never a SQLite file on a multi-machine cluster."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return url
    if not parsed.database or parsed.database == ":memory:":
        raise ClusterError("an in-memory SQLite store cannot be shared with Ray workers; use a file or PostgreSQL")
    hosts = node_addresses()
    if len(hosts) > 1:
        raise ClusterError(f"the store is a SQLite file, which the cluster's other machines ({len(hosts)} node "
                           "addresses) cannot reach; use PostgreSQL (--storage postgresql+psycopg://user@host/db) "
                           "for a multi-machine cluster")
    return parsed.set(database=os.path.abspath(parsed.database)).render_as_string(hide_password=False)
