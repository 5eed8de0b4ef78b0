"""The questions users come back with: which searches ran, what is the front of a device, which mode
should device X run under budget Y, and the export of that mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from subnetsearch.cli._common import JSON_HELP, console, fail, plain, print_json
from subnetsearch.cli._devices import STORAGE_HELP, open_store
from subnetsearch.devices import export_formats, get_runtime
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import check_output_path
from subnetsearch.search import FORMATS, ExportError, export_front, export_mode, format_for
from subnetsearch.storage import Budget, Store, StoredEvaluation, accuracy_interval
from subnetsearch.supernets import Realization

OBJECTIVE_SETS = "accuracy,latency | accuracy,macs | accuracy,energy | all"


def latency_text(e: StoredEvaluation) -> tuple[str, str]:
    """(the figure with its interval, how it was measured) of an evaluation's latency."""
    if e.latency_ms is None:
        return "-", "-"
    latency = e.latency or {}
    paired, interval = latency.get("paired"), latency.get("interval_ms")
    if not latency.get("measured", True):
        return f"{e.latency_ms:.3f}", "predicted (lookup table)"
    if not paired:
        return f"{e.latency_ms:.3f}", "unpaired (alone in its window)"
    if paired["graph"] == paired["reference"]:
        return f"{e.latency_ms:.3f}", "= reference graph"
    figure = f"{e.latency_ms:.3f} [{interval[0]:.3f}-{interval[1]:.3f}]" if interval else f"{e.latency_ms:.3f}"
    return figure, f"x{paired['ratio']:.3f}, {paired['ratios']} pairs / {paired['windows']} windows"


def speedup_text(e: StoredEvaluation, full_ms: float | None = None) -> str:
    """Speedup over the device's reference (the full network): 1 / the paired ratio, with its interval;
    for an unpaired figure, `full_ms` / its latency."""
    paired = (e.latency or {}).get("paired")
    if paired:
        if paired["graph"] == paired["reference"]:
            return "1.00x"
        return f"{1 / paired['ratio']:.2f}x [{1 / paired['high']:.2f}-{1 / paired['low']:.2f}]"
    return f"{full_ms / e.latency_ms:.2f}x" if full_ms and e.latency_ms else "-"


def accuracy_text(e: StoredEvaluation) -> str:
    if not e.accuracy_samples:
        return f"{e.accuracy:.4f}"
    low, high = accuracy_interval(e.accuracy, e.accuracy_samples)
    return f"{e.accuracy:.4f} +-{(high - low) / 2:.4f}"


def evaluations_table(title: str, rows: Sequence[StoredEvaluation]) -> Table:
    table = Table(title=title, caption="intervals: 95 % (latency: over the windows' median ratios to the device's "
                                       "reference, times its pooled median, at the confidence that many windows give "
                                       "(5: 93.75 %); accuracy: binomial over the validation images)")
    for column in ("mode id", "val acc", "latency ms [95 %]", "latency: how", "of bound", "MMACs", "energy mJ",
                   "supernet", "BN", "grouped layers as"):
        table.add_column(column, justify="left" if column in ("mode id", "supernet", "BN", "grouped layers as",
                                                               "latency: how") else "right")
    for e in rows:
        latency, how = latency_text(e)
        bn = "calibrated" if e.settings.get("calibration_batches", 0) else "stored"
        realization = Realization.from_dict((e.latency or {}).get("realization"))
        kernels = "-" if e.latency is None else (f"{len(realization.dense)} dense" if realization.dense else
                                                 "grouped" + (", gather shuffles" if realization.shuffle == "gather"
                                                              else ""))
        bound = (e.latency or {}).get("bound_ms")
        of_bound = f"{bound / e.latency_ms:.0%}" if bound and e.latency_ms else "-"
        table.add_row(e.mode_id, accuracy_text(e), latency, how, of_bound, f"{e.macs / 1e6:.2f}", f"{e.energy_mj:.4f}",
                      e.supernet_hash[:12], bn, kernels)
    return table


def supernets_command(storage: str | None = typer.Option(None, help=STORAGE_HELP),
                      as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the stored supernets (registered by every command that loads one)."""
    store = open_store(storage)
    if as_json:
        print_json([asdict(s) for s in store.list_supernets()])
        return
    table = Table(title=f"supernets in {store.url}")
    for column in ("content hash", "family", "data", "epochs", "checkpoint"):
        table.add_column(column)
    for s in store.list_supernets():
        table.add_row(s.content_hash[:12], s.family, str(s.data.get("name", "")), str(s.recipe.get("epochs", "")),
                      s.checkpoint_path)
    console.print(table)


def searches_command(
    device: str | None = typer.Option(None, help="Only the searches of this device."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the stored searches (any strategy), with their status."""
    store = open_store(storage)
    if as_json:
        print_json([asdict(s) for s in store.list_searches(device)])
        return
    table = Table(title=f"searches in {store.url}")
    table.add_column("name (rerun with --name to resume)", overflow="fold")  # never cut: it is what users type
    for column in ("strategy", "device", "supernet", "status", "started", "finished", "evaluations"):
        table.add_column(column)
    for s in store.list_searches(device):
        evaluations = s.summary.get("evaluations", s.summary.get("trials", ""))
        table.add_row(s.name, s.strategy, s.device or "- (training)", s.supernet_hash[:12], s.status,
                      f"{s.started_at:%Y-%m-%d %H:%M}",
                      f"{s.finished_at:%Y-%m-%d %H:%M}" if s.finished_at else "-", str(evaluations))
    console.print(table)


def front_command(
    device: str = typer.Option("this-host", help="The device whose front to show."),
    objectives: str = typer.Option("accuracy,latency", help=OBJECTIVE_SETS),
    supernet: str | None = typer.Option(None, help="Only this supernet (content hash or a prefix)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the stored Pareto front of a device, merged across all searches."""
    store = open_store(storage)
    try:
        supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
        rows = store.get_front(device, objectives, supernet_hash)
    except SubnetsearchError as error:
        fail(str(error))
    if not rows:
        fail(f"nothing stored for device {device} yet: run `subnetsearch search --device {device}` first", code=1)
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    console.print(evaluations_table(f"Pareto front ({objectives}) on {device}: {len(rows)} modes", rows))


def best_command(
    device: str = typer.Option("this-host", help="The device the mode will run on."),
    max_latency_ms: float | None = typer.Option(None, help="Budget: latency on the device (ms)."),
    max_macs: float | None = typer.Option(None, help="Budget: multiply-accumulates per inference."),
    max_energy_mj: float | None = typer.Option(None, help="Budget: modelled energy per inference (mJ)."),
    min_accuracy: float | None = typer.Option(None, help="Budget: validation accuracy (0-1)."),
    objective: str = typer.Option("accuracy", help="What to optimize among the modes within budget: "
                                                   "accuracy | latency | macs | energy."),
    supernet: str | None = typer.Option(None, help="Only this supernet (content hash or a prefix)."),
    export: Path | None = typer.Option(None, "--export", "-o", help="Also write the chosen mode here (.onnx, "
                                       ".pt TorchScript, .xml OpenVINO, .pte ExecuTorch, .json)."),
    format: str | None = typer.Option(None, help=f"Export format: {', '.join(FORMATS)} (default: from the suffix)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " {best, closest}; best is null if nothing fits."),
) -> None:
    """The best stored mode for a device under a budget (exit code 1 if nothing satisfies it)."""
    if export is not None:
        _check_output(export, format)
    store = open_store(storage)
    try:
        budget = Budget(max_latency_ms, max_macs, max_energy_mj, min_accuracy)
        supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
        answer = store.best_mode(device, budget, objective, supernet_hash)
    except SubnetsearchError as error:
        fail(str(error))
    limits = ", ".join(f"{name} {'<=' if kind == 'max' else '>='} {limit:g}" for name, kind, limit in budget.limits())
    limits = limits or "no budget"
    if as_json:
        print_json({"best": asdict(answer.best) if answer.best else None,
                    "closest": [asdict(row) for row in answer.closest], "front_size": answer.front_size,
                    "rule": answer.rule, "confidence": answer.confidence})
        if answer.best is None:
            raise typer.Exit(1)
    elif answer.best is None:
        if not answer.front_size:
            fail(f"nothing stored for device {device} yet: run `subnetsearch search --device {device}` first", code=1)
        console.print(f"[bold]no stored mode for {device} satisfies {limits}[/] ({answer.front_size} Pareto-optimal "
                      "modes considered). Closest:")
        console.print(evaluations_table("closest modes (least relative violation first)", answer.closest))
        raise typer.Exit(1)
    best = answer.best
    if not as_json:
        console.print(evaluations_table(f"best mode for {device} by {objective} under {limits}", [best]))
        plain(f"mode JSON: {best.mode_json}")
        plain(f"rule: {answer.rule}")
        for name, sure in answer.confidence.items():
            level = "unknown" if sure.get("confidence") is None else f"{sure['confidence']:.1%}"
            plain(f"how sure it meets the {name} budget: {level} ({sure['how']})")
    if export is not None:
        _export(store, best, export, format, quiet=as_json)
    elif not as_json:
        console.print(f"export it with: subnetsearch export {best.mode_id} --device {device} "
                      f"-o {best.mode_id}{_suffix_for(store, best)}")


def _suffix_for(store: Store, evaluation: StoredEvaluation) -> str:
    """The file a deployment of this mode wants: its device runtime's format (ONNX where the runtime
    has none of its own); ONNX for input-dependent modes (their branches export to If nodes)."""
    if evaluation.cost_profile:
        return ".onnx"
    runtime = get_runtime(store.get_device(evaluation.device).protocol.runtime)
    return runtime.suffixes[0] if runtime.suffixes and runtime.missing() is None else ".onnx"


def _check_output(path: Path, format: str | None) -> None:
    """The output path and format, checked before the store is opened or anything is computed."""
    try:
        chosen = format_for(path, format)
        runtime = export_formats().get(chosen)
        if runtime is not None and runtime.missing():
            raise ExportError(f"{chosen} export: {runtime.missing()}")
        check_output_path(path)
    except SubnetsearchError as error:
        fail(str(error))


def _export(store: Store, evaluation: StoredEvaluation, path: Path, format: str | None, quiet: bool = False) -> None:
    try:
        written = export_mode(store, evaluation, path, format)
    except SubnetsearchError as error:
        fail(str(error))
    if not quiet:  # with --json, stdout holds the JSON document only
        console.print(f"wrote {written} (mode {evaluation.mode_id} for {evaluation.device})")


def export_command(
    mode_id: str | None = typer.Argument(None, help="A stored mode's id (or a unique prefix); not with --front."),
    device: str = typer.Option("this-host", help="The device it was evaluated on."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .onnx, .pt (TorchScript), .xml (OpenVINO IR), "
                                                          ".pte (ExecuTorch) or .json; with --front: .onnx, .pte, "
                                                          ".xml or a new folder."),
    format: str | None = typer.Option(None, help=f"{', '.join(FORMATS)} (default: from the suffix; a --front "
                                                 "folder: onnx)."),
    front: bool = typer.Option(False, "--front", help="Every mode `best` chooses from for --device (its "
                                                      "Pareto-optimal modes) in one artifact that switches modes "
                                                      "on the device (subnetsearch.deploy.DynamicModel)."),
    modes: str | None = typer.Option(None, help="With --front: these stored modes instead (ids or prefixes, "
                                                "comma-separated)."),
    supernet: str | None = typer.Option(None, help="The supernet (content hash or prefix) if several have this mode."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Export a stored mode as JSON or as its materialized network (ONNX, TorchScript, OpenVINO, ExecuTorch),
    or a device's front as one artifact that switches modes (--front)."""
    if front or modes is not None:
        if mode_id is not None:
            fail("give a mode id or --front/--modes, not both")
        _export_front(device, out, format, modes, supernet, storage)
        return
    if mode_id is None:
        fail("give the id of a stored mode to export, or --front for the device's front")
    _check_output(out, format)
    store = open_store(storage)
    try:
        found = store.find_evaluations(device, mode_id, supernet)
    except SubnetsearchError as error:
        fail(str(error))
    if not found:
        fail(f"no stored mode {mode_id!r} on device {device}")
    _export(store, found[0], out, format)


def _export_front(device: str, out: Path, format: str | None, modes: str | None, supernet: str | None,
                  storage: str | None) -> None:
    ids = [part.strip() for part in modes.split(",") if part.strip()] if modes is not None else None
    if ids is not None and not ids:
        fail("--modes names no mode: give stored mode ids, comma-separated")
    store = open_store(storage)
    try:
        supernet_hash = store.get_supernet(supernet).content_hash if supernet else None
        written = export_front(store, device, out, format, ids, supernet_hash)
    except SubnetsearchError as error:
        fail(str(error))
    manifest = written.manifest
    table = Table(title=f"{out}: {len(manifest.modes)} modes of {device} ({manifest.form}, {manifest.runtime})")
    for column in ("index", "mode", "kind", "accuracy", "latency (ms)"):
        table.add_column(column)
    for entry in manifest.modes:
        latency = entry.metrics.get("latency_ms")
        table.add_row(str(entry.index), entry.id[:12], entry.kind, f"{entry.metrics['accuracy']:.4f}",
                      "-" if latency is None else f"{latency:.4f}")
    console.print(table)
    console.print(f"wrote {', '.join(str(f) for f in written.files)}; load it with "
                  f"subnetsearch.deploy.DynamicModel.load({str(out)!r})")
