"""Figures and reports (plotly), and the optuna-dashboard launcher."""

from subnetsearch.dashboards._data import (
    COSTS,
    Curve,
    DeviceReport,
    Point,
    Series,
    cross_device,
    device_report,
    full_mode_of,
)
from subnetsearch.dashboards._render import (
    build_report,
    cross_device_figure,
    front_figure,
    hypervolume_figure,
    layers_figure,
    predictor_figure,
    write_report,
)
from subnetsearch.dashboards._serve import dashboard_app, serve_dashboard

__all__ = [
    "COSTS",
    "build_report",
    "Curve",
    "DeviceReport",
    "Point",
    "Series",
    "cross_device",
    "cross_device_figure",
    "dashboard_app",
    "device_report",
    "front_figure",
    "full_mode_of",
    "hypervolume_figure",
    "predictor_figure",
    "layers_figure",
    "serve_dashboard",
    "write_report",
]
