"""`subnetsearch devices ...`: add, list, remove and measure hardware targets."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import STORAGE_HELP, console, fail, parse_mode
from subnetsearch.devices import (
    LOCATIONS,
    Device,
    DeviceError,
    LatencyProtocol,
    LatencyTable,
    all_layer_configs,
    build_table,
    conv_sites,
    default_host_device,
    host_description,
    measure_latencies,
)
from subnetsearch.storage import StorageError, Store
from subnetsearch.supernets import DEFAULT_CHECKPOINT, CheckpointError, WeNetSupernet, load_checkpoint

devices_app = typer.Typer(no_args_is_help=True, help="Hardware targets: add, list, remove, measure.")


def open_store(storage: str | None) -> Store:
    try:
        return Store(storage)
    except StorageError as error:
        fail(str(error))


def device_or_default(store: Store, name: str) -> Device:
    """A recorded device; `this-host` is recorded with the default host profile on first use."""
    try:
        return store.get_device(name)
    except DeviceError as error:
        if name != "this-host":
            fail(str(error))
    try:
        return store.add_device(default_host_device())
    except StorageError:  # recorded by another process at the same moment
        return store.get_device(name)


@devices_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Device name: a-z, 0-9, '.', '_', '-'."),
    location: str = typer.Option("host", help=f"One of {', '.join(LOCATIONS)}."),
    runtime: str = typer.Option("onnxruntime", help="eager | optimized | onnxruntime"),
    threads: int = typer.Option(2),
    batch_size: int = typer.Option(1),
    channels_last: bool = typer.Option(False, help="NHWC layout (PyTorch runtimes)."),
    repeats: int = typer.Option(5, help="Timing repeats; the minimum of their medians is reported."),
    description: str | None = typer.Option(None, help="Free text (default for host devices: this CPU)."),
    replace: bool = typer.Option(False, help="Replace an existing device of that name."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Record a hardware target."""
    try:
        protocol = LatencyProtocol(runtime=runtime, batch_size=batch_size, threads=threads, repeats=repeats,  # type: ignore[arg-type]
                                   channels_last=channels_last)
        text = description if description is not None else (host_description() if location == "host" else "")
        device = Device(name, location, protocol, description=text)  # type: ignore[arg-type]
        open_store(storage).add_device(device, replace=replace)
    except (ValueError, StorageError) as error:
        fail(str(error))
    console.print(f"device {name} recorded: {location}, {runtime}, batch {batch_size}, {threads} threads")


@devices_app.command("list")
def list_command(storage: str | None = typer.Option(None, help=STORAGE_HELP)) -> None:
    """List the recorded hardware targets."""
    store = open_store(storage)
    table = Table(title=f"devices in {store.url}")
    for column in ("name", "location", "runtime", "batch", "threads", "layout", "energy coefficients", "description"):
        table.add_column(column)
    for device in store.list_devices():
        p = device.protocol
        table.add_row(device.name, device.location, p.runtime, str(p.batch_size), str(p.threads),
                      "NHWC" if p.channels_last else "NCHW", device.energy.source, device.description)
    console.print(table)


@devices_app.command("remove")
def remove_command(name: str, storage: str | None = typer.Option(None, help=STORAGE_HELP)) -> None:
    """Forget a hardware target (and its stored evaluations)."""
    try:
        open_store(storage).remove_device(name)
    except DeviceError as error:
        fail(str(error))
    console.print(f"device {name} removed")


@devices_app.command("measure")
def measure_command(
    name: str = typer.Argument(..., help="A recorded device on this host."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint."),
    modes: str = typer.Option("full,uniform:2,uniform:4,uniform:8,smallest",
                              help="Comma-separated: full | smallest | uniform:G | a mode JSON file."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Measure the latency of materialized modes on a device of this host (one interleaved run)."""
    try:
        device = open_store(storage).get_device(name)
        state = load_checkpoint(checkpoint)
        supernet = state.build()
    except (DeviceError, CheckpointError) as error:
        fail(str(error))
    if device.location != "host":
        fail(f"device {name} is a {device.location} device: it cannot be measured on this host")
    chosen = [(text, parse_mode(supernet, text)) for text in modes.split(",") if text]
    models = {text: supernet.materialize(mode) for text, mode in chosen}
    try:
        latencies = measure_latencies(models, supernet.input_shape, device.protocol)
    except Exception as error:  # an ONNX export or runtime failure, reported with what failed
        fail(f"measuring on {name} ({device.protocol.runtime}) failed: {type(error).__name__}: {error}")
    p = device.protocol
    table = Table(title=f"{name}: {p.runtime}, batch {p.batch_size}, {p.threads} threads, min of {p.repeats} medians")
    for column in ("mode", "MMACs", "latency ms", "IQR ms", "speedup vs first"):
        table.add_column(column, justify="right")
    first = latencies[chosen[0][0]].ms
    for text, mode in chosen:
        latency = latencies[text]
        table.add_row(text, f"{supernet.cost(mode).macs / 1e6:.2f}", f"{latency.ms:.3f}", f"{latency.iqr_ms:.3f}",
                      f"{first / latency.ms:.2f}x")
    console.print(table)


@devices_app.command("table")
def table_command(
    name: str = typer.Argument(..., help="A recorded device."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="The supernet whose layer configurations to cover."),
    import_file: Path | None = typer.Option(None, help="Import a table measured elsewhere (JSON, as --export-file "
                                                       "writes) instead of measuring here."),
    export_file: Path | None = typer.Option(None, help="Write the device's stored table to this JSON file."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Build (measure here), import or export a device's latency lookup table for a supernet:
    every layer configuration the supernet's modes can run, each measured once, plus the fixed
    overhead. `subnetsearch search --latency predicted` then predicts instead of measuring."""
    store = open_store(storage)
    try:
        device = store.get_device(name)
        state = load_checkpoint(checkpoint)
        supernet = state.build()
    except (DeviceError, CheckpointError) as error:
        fail(str(error))
    if not isinstance(supernet, WeNetSupernet):
        fail(f"latency lookup tables cover WeNet supernets (per-layer group counts); {state.arch['family']} has "
             f"{len(supernet.space.knobs[0].values)} modes: measure them (`subnetsearch search --latency measured`)")
    store.register_supernet(state, checkpoint.resolve())
    if export_file is not None:
        stored = store.get_latency_table(name, state.hash)
        if stored is None:
            fail(f"device {name} has no latency table for supernet {state.hash[:12]}")
        export_file.write_text(json.dumps(stored[0], indent=1) + "\n")
        console.print(f"wrote {export_file} ({stored[1]} table of {name})")
        return
    if import_file is not None:
        try:
            table = LatencyTable.from_dict(json.loads(import_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            fail(f"{import_file} is not a latency table ({type(error).__name__}: {error})")
        missing = [c for c in all_layer_configs(conv_sites(supernet), supernet) if c.key() not in table.entries]
        if missing:
            fail(f"{import_file} lacks {len(missing)} layer configuration(s) of this supernet, e.g. {missing[0]}")
        source = "imported"
    else:
        if device.location != "host":
            fail(f"device {name} is a {device.location} device: measure its table on the device "
                 "(`subnetsearch devices table` there, --export-file) and import it here with --import-file")
        generator = torch.Generator().manual_seed(0)
        with console.status(f"measuring every layer configuration on {name} ({device.protocol.runtime})"):
            table = build_table(supernet, None, device.protocol, [supernet.random_mode(generator) for _ in range(5)])
        source = "measured"
    store.put_latency_table(name, state.hash, table.to_dict(), table.digest, source)
    console.print(f"{source} latency table of {name} for supernet {state.hash[:12]}: {len(table.entries)} layer "
                  f"configurations, fixed overhead {table.overhead_ms:.3f} ms, digest {table.digest}")
