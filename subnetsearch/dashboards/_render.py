"""Step two: draw the plot data as plotly figures and write one self-contained HTML report (plotly's
JavaScript inlined once; no network fetch when the file is opened)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from subnetsearch.dashboards._data import COSTS, DeviceReport, Series, built_supernet, cross_device, device_report
from subnetsearch.files import write_atomically
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store
from subnetsearch.supernets import BaseSupernet


def _scatter(series: Series, mode: str = "markers", intervals: bool = False, **style) -> go.Scatter:
    if intervals:  # each point's 95 % intervals (the stored front: what `front` and `best` compare)
        points = series.points
        style["error_x"] = {"type": "data", "symmetric": False, "array": [p.cost_interval[1] - p.cost for p in points],
                            "arrayminus": [p.cost - p.cost_interval[0] for p in points], "thickness": 1}
        style["error_y"] = {"type": "data", "symmetric": False,
                            "array": [p.accuracy_interval[1] - p.accuracy for p in points],
                            "arrayminus": [p.accuracy - p.accuracy_interval[0] for p in points], "thickness": 1}
    return go.Scatter(x=[p.cost for p in series.points], y=[p.accuracy for p in series.points], mode=mode,
                      name=series.name, text=[p.label for p in series.points], customdata=[p.mode_id for p in
                                                                                           series.points],
                      hovertemplate="%{text}<extra>%{fullData.name}</extra>", **style)


def front_figure(report: DeviceReport, cost: str) -> go.Figure:
    """The stored front (first trace: one marker per front mode), the full network, the fronts of
    each strategy and the DSE trajectories."""
    figure = go.Figure()
    # open markers: the strategies' fronts drawn on top stay visible where they coincide with it
    figure.add_trace(_scatter(report.fronts[cost], "lines+markers", intervals=True,
                              marker={"size": 12, "color": "#1f77b4", "symbol": "circle-open", "line": {"width": 2}},
                              line={"shape": "hv", "width": 1}))
    if cost in report.full:
        full = report.full[cost]
        figure.add_trace(go.Scatter(x=[full.cost], y=[full.accuracy], mode="markers", name="full network",
                                    text=[full.label], hovertemplate="%{text}<extra>full network</extra>",
                                    marker={"symbol": "star", "size": 16, "color": "#d62728"}))
    for symbol, series in zip(_SYMBOLS, report.strategy_fronts.get(cost, []), strict=False):
        figure.add_trace(_scatter(Series(f"front of {series.name}", series.points),
                                  marker={"size": 7, "opacity": 0.85, "symbol": symbol}))
    for series in report.dse.get(cost, []):
        figure.add_trace(_scatter(Series(f"DSE trajectory ({series.name.split('/')[-1] or series.name})",
                                         series.points), "lines+markers", marker={"size": 5},
                                  line={"dash": "dot"}))
    title = f"{report.device}: accuracy vs {COSTS[cost]}"
    if report.full_missing:
        title += f"<br><sup>no full-network star: {html.escape(report.full_missing)}</sup>"
    figure.update_layout(title=title, xaxis_title=COSTS[cost], yaxis_title="validation accuracy", height=460,
                         legend={"font": {"size": 10}})
    return figure


_SYMBOLS = ("diamond", "square", "triangle-up", "cross", "x", "triangle-down", "pentagon", "hexagon") * 4


def _short(search_name: str) -> str:
    """A search's name without the supernet@device prefix every search of one report shares."""
    return search_name.split("/", 1)[1] if "/" in search_name else search_name


def hypervolume_figure(report: DeviceReport) -> go.Figure:
    figure = go.Figure()
    for curve in report.hypervolume:
        figure.add_trace(go.Scatter(x=list(curve.x), y=list(curve.y), mode="lines", name=_short(curve.name),
                                    hovertemplate=f"{html.escape(curve.name)}<br>%{{x}} evaluations: %{{y:.3f}}"
                                                  "<extra></extra>"))
    longest = max((len(curve.x) for curve in report.hypervolume), default=1)
    cost = report.costs[0]
    reference = report.hypervolume_reference
    figure.update_layout(title=f"{report.device}: hypervolume (accuracy vs {COSTS[cost]}) against evaluations, as a "
                               f"fraction of all stored evaluations' (reference point: accuracy "
                               f"{reference.get('accuracy', 0):.3f}, {cost} {reference.get(cost, 0):.4g})",
                         xaxis={"title": "evaluations", "dtick": max(1, -(-longest // 10)), "tick0": 1},
                         yaxis_title="hypervolume fraction", height=460, title_font={"size": 13},
                         legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return figure


def predictor_figure(report: DeviceReport) -> go.Figure:
    """Per predictor search: the Kendall tau of its accuracy model's predictions for each round's
    batch (made before the batch was evaluated) against the accuracy measured."""
    figure = go.Figure()
    for curve in report.predictor_fit:
        rounds = {int(r["round"]): r for r in report.predictor_rounds.get(curve.name, [])}
        text = [f"fitted on {rounds[x].get('trained_on', '?')} evaluations, "
                f"{rounds[x].get('models', {}).get('accuracy', {}).get('features', '?')} features, planning "
                f"{rounds[x].get('fit_s', 0) + rounds[x].get('evolve_s', 0) + rounds[x].get('select_s', 0):.1f} s"
                if x in rounds else "" for x in curve.x]
        figure.add_trace(go.Scatter(x=list(curve.x), y=list(curve.y), mode="lines+markers", name=_short(curve.name),
                                    text=text, hovertemplate=f"{html.escape(curve.name)}<br>round %{{x}}: tau "
                                                             "%{y:.3f}<br>%{text}<extra></extra>"))
    figure.update_layout(title=f"{report.device}: predictor searches: held-out Kendall tau of predicted vs measured "
                               "accuracy per round",
                         xaxis={"title": "round", "dtick": 1}, yaxis={"title": "Kendall tau", "range": [-1, 1]},
                         height=400, title_font={"size": 13}, legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return figure


def layers_figure(report: DeviceReport) -> go.Figure:
    """Per-layer knob values of the front's modes (the papers' Fig. 6/7 view)."""
    figure = go.Figure(go.Heatmap(z=[list(values) for _, values in report.layer_modes], x=list(report.layers),
                                  y=[mode_id for mode_id, _ in report.layer_modes], colorscale="Viridis",
                                  colorbar={"title": "groups"}))
    figure.update_layout(title=f"{report.device}: group count per layer of the front's modes (cheapest first)",
                         xaxis_title="layer", yaxis={"title": "mode", "autorange": "reversed"},  # first row on top
                         height=max(300, 40 + 22 * len(report.layer_modes)))
    return figure


def cross_device_figure(series: Sequence[Series], cost: str) -> go.Figure:
    figure = go.Figure()
    for one in series:
        figure.add_trace(_scatter(one, "lines+markers", line={"shape": "hv"}))
    figure.update_layout(title=f"the same supernet on {len(series)} devices: accuracy vs {COSTS[cost]}",
                         xaxis_title=COSTS[cost], yaxis_title="validation accuracy", height=460)
    return figure


def write_report(path: Path, reports: Sequence[DeviceReport], cross: tuple[list[Series], str] | None,
                 title: str, storage: str) -> Path:
    """One HTML file: plotly.js inlined in the first figure, every figure a div with a stable id
    (`front-<device>-<cost>`, `hypervolume-<device>`, `predictor-<device>`, `layers-<device>`, `cross-device`)."""
    parts: list[str] = []
    include = True

    def add(figure: go.Figure, div_id: str) -> None:
        nonlocal include
        parts.append(pio.to_html(figure, include_plotlyjs=include, full_html=False, div_id=div_id,
                                 config={"displaylogo": False}))
        include = False

    for report in reports:
        parts.append(f"<h2>device {html.escape(report.device)} &middot; supernet {report.supernet_hash[:12]}</h2>")
        if not report.costs:
            parts.append("<p>nothing stored for this device yet</p>")
            continue
        parts.append(f"<p class='noise'>latency noise on {html.escape(report.device)}: "
                     + (html.escape(report.noise) if report.noise else "not measured (`subnetsearch devices noise "
                        f"{html.escape(report.device)}`)") + "; error bars: 95 % intervals</p>")
        for cost in report.costs:
            add(front_figure(report, cost), f"front-{report.device}-{cost}")
        if report.hypervolume:
            add(hypervolume_figure(report), f"hypervolume-{report.device}")
        if report.predictor_fit:
            add(predictor_figure(report), f"predictor-{report.device}")
        if report.layer_modes:
            add(layers_figure(report), f"layers-{report.device}")
    if cross is not None:
        parts.append("<h2>across devices</h2>")
        add(cross_device_figure(*cross), "cross-device")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}h2{margin-top:1.6em}</style>"
                f"</head><body><h1>{html.escape(title)}</h1><p>storage {html.escape(storage)} &middot; {stamp}. "
                "Hover a point for its mode id and the command that exports it.</p>"
                + "\n".join(parts) + "</body></html>")
    write_atomically(path, document.encode("utf-8"))
    return path


def _kinds(supernet: BaseSupernet) -> Callable[[str], str]:
    return lambda mode_json: supernet.kind_of(Mode.from_json(mode_json))


def build_report(store: Store, url: str, out: Path, devices: list[str] | None = None,
                 supernet: str | None = None) -> tuple[Path, int]:
    """Write the report for the given devices (default: every device with evaluations, every stored
    supernet or the one given by hash prefix). Returns the path and the number of (device, supernet)
    sections; the cross-device chart is drawn once two devices have latency (or energy) results."""
    names = devices or [d.name for d in store.list_devices()]
    supernets = [store.get_supernet(supernet)] if supernet else store.list_supernets()
    built = {record.content_hash: built_supernet(record.arch) for record in supernets}  # each once
    reports = []
    for name in names:
        for record in supernets:
            network = built[record.content_hash]
            report = device_report(store, url, name, record.content_hash,
                                   None if network is None else network.full_mode().id,
                                   None if network is None else _kinds(network))
            if report.costs or devices:
                reports.append(report)
    cross = None
    for record in supernets:
        with_latency = [r.device for r in reports if r.supernet_hash == record.content_hash and "latency" in r.costs]
        with_energy = [r.device for r in reports if r.supernet_hash == record.content_hash and "energy" in r.costs]
        if len(with_latency) >= 2:
            cross = (cross_device(store, record.content_hash, with_latency, "latency"), "latency")
        elif len(with_energy) >= 2:
            cross = (cross_device(store, record.content_hash, with_energy, "energy"), "energy")
        if cross:
            break
    write_report(out, reports, cross, "subnetsearch report", store.url)
    return out, len(reports)
