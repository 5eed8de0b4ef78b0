"""optuna-dashboard on the project's storage URL: every search is a study there (named like the
search, with metric names and user attributes for supernet, device and strategy)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise here
        pass


def _feasible_pareto_front(front):
    """optuna-dashboard 0.21 lists a study's best trials from every complete trial, infeasible ones
    included (`_app.py` -> `_pareto_front.get_pareto_front_trials`); Optuna and the store take the
    front of the feasible trials only."""

    def feasible_front(trials, directions):
        return front([t for t in trials if all(value <= 0 for value in t.constraints.values())], directions)

    return feasible_front


def _with_constraints(serialize):
    """optuna-dashboard 0.21 reads a trial's constraints from `system_attrs["constraints"]` (a list:
    `_serializer.py`), Optuna 5 stores them as `constraints:<name>` attrs, so the dashboard shows
    none and draws infeasible trials as feasible. Serve Optuna's own reading of them instead."""

    def serialize_trial(study_id, trial, study_system_attrs):
        serialized = serialize(study_id, trial, study_system_attrs)
        serialized["constraints"] = list(trial.constraints.values())
        return serialized

    return serialize_trial


_ADAPTED = False


def _adapt_dashboard() -> None:
    """Make optuna-dashboard show the feasibility the store and Optuna use (the one place this
    project adapts to its internals; tests/dashboards checks it through the dashboard's API)."""
    global _ADAPTED
    if _ADAPTED:
        return
    from optuna_dashboard import _app, _serializer

    _app.get_pareto_front_trials = _feasible_pareto_front(_app.get_pareto_front_trials)
    _serializer.serialize_frozen_trial = _with_constraints(_serializer.serialize_frozen_trial)
    _ADAPTED = True


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only(app):
    """A WSGI wrapper that serves reads only: optuna-dashboard (0.21 has no read-only mode) lets any
    client that reaches it rename or delete studies, add notes and tell trials; the studies are the
    project's search records."""

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = (b'{"reason": "this dashboard is served read-only; start it with `subnetsearch dashboard --writable` '
                b'to change studies"}')
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", "GET, HEAD"),
                                                  ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def dashboard_app(storage_url: str, writable: bool = False):
    """The dashboard as a WSGI application (Optuna's RDB storage on the same URL as the store),
    showing the same feasibility as the store (constraints shown, best trials feasible only);
    read-only unless `writable`."""
    import optuna
    import optuna_dashboard

    _adapt_dashboard()
    # Our own RDBStorage: optuna-dashboard's skips creating Optuna's tables, and fails on a store no
    # search has written to yet.
    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(storage_url))
    return app if writable else read_only(app)


def serve_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080, ready=None,
                    writable: bool = False) -> None:
    """Serve until interrupted. `ready(address)` is called once the socket listens."""
    server = make_server(host, port, dashboard_app(storage_url, writable), handler_class=_QuietHandler)
    if ready is not None:
        ready(f"http://{host}:{server.server_port}/dashboard/")
    try:
        server.serve_forever()
    finally:
        server.server_close()
