"""`subnetsearch devices ...`: add, list, remove and measure hardware targets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import STORAGE_HELP, console, fail, parse_mode
from subnetsearch.devices import (
    LOCATIONS,
    RUNTIMES,
    Device,
    DeviceError,
    LatencyProtocol,
    LatencyTable,
    all_layer_configs,
    available_runtimes,
    build_table,
    compare_runtimes,
    conv_sites,
    get_runtime,
    host_description,
    host_roofline,
    paired_latency,
    reference_for,
)
from subnetsearch.errors import SubnetsearchError
from subnetsearch.search import device_or_host, record_device_noise
from subnetsearch.storage import StorageError, Store
from subnetsearch.supernets import (
    DEFAULT_CHECKPOINT,
    PLAIN,
    CheckpointError,
    Realization,
    WeNetSupernet,
    load_checkpoint,
)

devices_app = typer.Typer(no_args_is_help=True, help="Hardware targets: add, list, remove, measure.")


def open_store(storage: str | None) -> Store:
    try:
        return Store(storage)
    except StorageError as error:
        fail(str(error))


def device_or_default(store: Store, name: str) -> Device:
    """A recorded device; `this-host` is recorded with the default host profile on first use
    (`search.device_or_host`)."""
    try:
        return device_or_host(store, name)
    except DeviceError as error:
        fail(str(error))


AUTO_MODES = "full,uniform:2,uniform:4,uniform:8,smallest"


@devices_app.command("add")
def add_command(
    name: str = typer.Argument(..., help="Device name: a-z, 0-9, '.', '_', '-'."),
    location: str = typer.Option("host", help=f"One of {', '.join(LOCATIONS)}."),
    runtime: str = typer.Option("onnxruntime", help=f"{' | '.join(RUNTIMES)} | auto (measure every runtime "
                                                    "installed here on --checkpoint's modes, keep the fastest)."),
    threads: int = typer.Option(2),
    batch_size: int = typer.Option(1),
    channels_last: bool = typer.Option(False, help="NHWC layout (PyTorch runtimes)."),
    repeats: int = typer.Option(5, help="Timing repeats; the minimum of their medians is reported."),
    description: str | None = typer.Option(None, help="Free text (default for host devices: this CPU)."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="With --runtime auto: the supernet whose modes decide."),
    modes: str = typer.Option(AUTO_MODES, help="With --runtime auto: the modes measured on each runtime."),
    candidates: str | None = typer.Option(None, "--runtimes", help="With --runtime auto: the runtimes to try "
                                                                   "(comma-separated; default: every one installed)."),
    roofline: bool = typer.Option(True, help="Measure the host's peak MAC rate (matmul and the runtime's "
                                             "convolutions) and bandwidths (host devices, ~4 s): latencies are "
                                             "then shown against their roofline bound."),
    replace: bool = typer.Option(False, help="Replace an existing device of that name."),
    noise: bool = typer.Option(True, help="Host devices: measure the device's repeatability (its noise profile, "
                                          "`devices noise`) with the --checkpoint's full network."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Record a hardware target."""
    store = open_store(storage)
    try:
        if not replace:  # refused before anything is measured
            store.get_device(name)
            fail(f"device {name!r} exists already (replace it explicitly with --replace)")
    except DeviceError:
        pass
    try:
        protocol = LatencyProtocol(runtime="eager" if runtime == "auto" else runtime, batch_size=batch_size,
                                   threads=threads, repeats=repeats, channels_last=channels_last)
        text = description if description is not None else (host_description() if location == "host" else "")
        device = Device(name, location, protocol, description=text)  # type: ignore[arg-type]
    except ValueError as error:
        fail(str(error))
    if location == "host":
        if runtime == "auto":
            protocol = _fastest_runtime(checkpoint, modes, protocol, candidates)
        elif (missing := get_runtime(runtime).missing()) is not None:
            fail(f"{missing} (or record the device with --location ray-node for a node that has it)")
        device = dataclasses.replace(device, protocol=protocol,
                                     roofline=host_roofline(threads, protocol.runtime) if roofline else None)
    elif runtime == "auto":
        fail("--runtime auto measures the runtimes of this host: use it with --location host, or name the "
             "device's runtime")
    try:
        store.add_device(device, replace=replace)
    except StorageError as error:
        fail(str(error))
    p = device.protocol
    console.print(f"device {name} recorded: {location}, {p.runtime}, batch {p.batch_size}, {p.threads} threads")
    if device.roofline is not None:
        console.print(f"roofline: {device.roofline.how}")
    if location == "host" and noise:
        try:
            profile = record_device_noise(store, device, load_checkpoint(checkpoint).build())
        except CheckpointError as error:
            fail(f"the device is recorded, but its noise profile needs a supernet: {error}")
        console.print(f"noise: {profile.describe()}")


@devices_app.command("noise")
def noise_command(
    name: str = typer.Argument(..., help="A recorded device on this host."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="The supernet whose full network is the reference."),
    windows: int = typer.Option(5, min=2, help="Separate measurement windows."),
    resolution: float | None = typer.Option(None, help="The relative latency difference you need to separate "
                                                        "(e.g. 0.05): exit code 1 if the device is noisier."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Measure a device's repeatability: its reference network in separate windows, each paired against
    itself. Stored with the device (`devices list`, the report) and printed."""
    store = open_store(storage)
    try:
        device = store.get_device(name)
        supernet = load_checkpoint(checkpoint).build()
        profile = record_device_noise(store, device, supernet, windows)
    except SubnetsearchError as error:
        fail(str(error))
    console.print(f"{name}: {profile.describe()}")
    if resolution is not None and profile.resolution > resolution:
        fail(f"{name} cannot resolve {resolution:.1%}: its paired figures are reliable to {profile.resolution:.1%} "
             "only; measure on a quieter host, or longer (more windows per graph)", code=1)


def _fastest_runtime(checkpoint: Path, modes: str, protocol: LatencyProtocol, candidates: str | None) -> LatencyProtocol:
    """`--runtime auto`: every installed runtime (or each of `candidates`) measures the same modes;
    the fastest is kept."""
    runtimes = available_runtimes()
    if candidates is not None:
        asked = [name for name in candidates.split(",") if name]
        for name in asked:
            try:
                missing = get_runtime(name).missing()
            except ValueError as error:
                fail(f"--runtimes: {error}")
            if missing:
                fail(f"--runtimes: {missing}")
        runtimes = tuple(asked)
    try:
        supernet = load_checkpoint(checkpoint).build()
    except CheckpointError as error:
        fail(str(error))
    names = [text for text in modes.split(",") if text]
    unknown = []
    for text in names:
        try:
            if supernet.mode_named(text) is None:
                unknown.append(text)
        except ValueError as error:  # a name of the right kind with a bad value (ModeError)
            unknown.append(f"{text}: {error}")
    if unknown or not names:
        fail(f"--modes must name modes of the supernet (full, smallest, uniform:G, ...); unknown: {unknown or modes!r}")
    with console.status(f"measuring {len(names)} modes on each of {', '.join(runtimes)} (one process each)"):
        trials = compare_runtimes(checkpoint, names, protocol, runtimes)
    table = Table(title=f"runtimes on this host: batch {protocol.batch_size}, {protocol.threads} threads, "
                        f"the faster realization of each mode (ms)")
    table.add_column("runtime")
    for text in names:
        table.add_column(text, justify="right")
    table.add_column("geometric mean", justify="right")
    for trial in trials:
        if trial.error:
            table.add_row(trial.runtime, *["-"] * len(names), f"failed: {trial.error}")
        else:
            table.add_row(trial.runtime, *[f"{trial.latencies_ms[t]:.3f} ({trial.kernels[t]})" for t in names],
                          f"{trial.score_ms:.3f}")
    console.print(table)
    best = min(trials, key=lambda trial: trial.score_ms)
    if best.error:
        fail("no runtime could measure the modes on this host (see the table)")
    console.print(f"fastest: {best.runtime}")
    return dataclasses.replace(protocol, runtime=best.runtime)


@devices_app.command("list")
def list_command(storage: str | None = typer.Option(None, help=STORAGE_HELP)) -> None:
    """List the recorded hardware targets."""
    store = open_store(storage)
    table = Table(title=f"devices in {store.url}")
    for column in ("name", "location", "runtime", "batch", "threads", "layout", "energy coefficients",
                   "latency resolution", "description"):
        table.add_column(column)
    for device in store.list_devices():
        p = device.protocol
        noise = store.get_device_noise(device.name)
        table.add_row(device.name, device.location, p.runtime, str(p.batch_size), str(p.threads),
                      "NHWC" if p.channels_last else "NCHW", device.energy.source,
                      "not measured" if noise is None else f"{noise.resolution:.1%}", device.description)
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
    """Measure the latency of materialized modes on a device of this host, each with its grouped layers as
    grouped kernels and as dense equivalents, paired against the full network (a window per mode,
    added to the store's figure of each graph), against the roofline bound."""
    try:
        device = open_store(storage).get_device(name)
        state = load_checkpoint(checkpoint)
        supernet = state.build()
    except SubnetsearchError as error:
        fail(str(error))
    if device.location != "host":
        fail(f"device {name} is a {device.location} device: it cannot be measured on this host")
    if (missing := get_runtime(device.protocol.runtime).missing()) is not None:
        fail(missing)
    chosen = [(text, parse_mode(supernet, text)) for text in modes.split(",") if text]
    store = open_store(storage)
    shape, p = supernet.input_shape, device.protocol
    reference = reference_for(supernet.realize(supernet.full_mode(), PLAIN), shape, p)
    book = store.graph_book(name, p, reference.digest)
    shuffle = get_runtime(p.runtime).shuffle
    figures = {}
    try:
        for text, mode in chosen:
            grouped = supernet.grouped_layers(mode)
            statics = {"grouped": supernet.realize(mode, Realization((), shuffle))}
            if grouped:
                statics["dense"] = supernet.realize(mode, Realization(tuple(grouped)))
            figures[text] = paired_latency(statics, reference, shape, p, book, remeasure=True)
    except Exception as error:  # an export or runtime failure, reported with what failed
        fail(f"measuring on {name} ({p.runtime}) failed: {type(error).__name__}: {error}")
    pooled = book.pooled_reference_ms() or 0.0
    table = Table(title=f"{name}: {p.runtime}, batch {p.batch_size}, {p.threads} threads; paired against the full "
                        f"network (pooled median {pooled:.3f} ms over {len(book.reference_ms())} blocks), 95 % intervals")
    columns = ["mode", "MMACs", "grouped x full", "dense x full", "kept ms [95 %]", "speedup", "windows"]
    if device.roofline is not None:
        columns += ["bound ms", "of bound"]
    for column in columns:
        table.add_column(column, justify="right")
    above = []
    for text, mode in chosen:
        kept, latency = figures[text]
        paired = latency.paired or {}
        ratios = {kept: paired.get("ratio", 1.0), **{label: other["ratio"] for label, other in
                                                      paired.get("others", {}).items()}}
        low, high = latency.interval_ms or (latency.ms, latency.ms)
        speedup = "1.00x" if paired.get("graph") == reference.digest else \
            f"{1 / paired['ratio']:.2f}x [{1 / paired['high']:.2f}-{1 / paired['low']:.2f}]"
        row = [text, f"{supernet.cost(mode).macs / 1e6:.2f}", f"{ratios['grouped']:.3f}",
               f"{ratios['dense']:.3f}" if "dense" in ratios else "-", f"{latency.ms:.3f} [{low:.3f}-{high:.3f}]",
               speedup, str(paired.get("windows", 0)) if paired.get("graph") != reference.digest else "reference"]
        if device.roofline is not None:
            bound = device.roofline.bound_ms(*supernet.layers_for(mode), batch=p.batch_size)
            row += [f"{bound:.3f}", f"{bound / latency.ms:.0%}"]
            if bound > latency.ms:
                above.append(text)
        table.add_row(*row)
    console.print(table)
    console.print("x full: the realization's paired ratio to the full network (a graph identical to it is 1); "
                  "each measurement adds its window to the graph's figure in the store")
    if device.roofline is not None:
        console.print(f"bound: the roofline ({device.roofline.how}); 'of bound' = bound / kept latency")
    if above:
        console.print(f"above the bound: {', '.join(above)} ran faster than the roofline allows, so {p.runtime} "
                      f"beat every kernel its peak was measured with; re-measure it (`devices add {name} --replace`) "
                      "on a quiet host")
    stored_noise = store.get_device_noise(name)
    console.print(f"noise: {stored_noise.describe()}" if stored_noise is not None else
                  f"noise: not measured yet (`subnetsearch devices noise {name}`); these figures are one window each")
    if above:
        console.print(f"above the bound: {', '.join(above)} ran faster than the roofline allows, so {p.runtime} "
                      f"beat every kernel its peak was measured with; re-measure it (`devices add {name} --replace`) "
                      "on a quiet host")


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
    except SubnetsearchError as error:
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
            table = build_table(supernet, None, device.protocol, [supernet.random_mode(generator) for _ in range(8)])
        source = "measured"
    store.put_latency_table(name, state.hash, table.to_dict(), table.digest, source)
    console.print(f"{source} latency table of {name} for supernet {state.hash[:12]}: {len(table.entries)} layer "
                  f"configurations, fixed overhead {table.overhead_ms:.3f} ms, digest {table.digest}")
