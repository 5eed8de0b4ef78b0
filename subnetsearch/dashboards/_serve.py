"""optuna-dashboard on the project's storage URL: every search is a study there (named like the
search, with metric names and user attributes for supernet, device and strategy)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise here
        pass


def dashboard_app(storage_url: str):
    """The dashboard as a WSGI application (Optuna's RDB storage on the same URL as the store)."""
    import optuna_dashboard

    return optuna_dashboard.wsgi(storage_url)


def serve_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080, ready=None) -> None:
    """Serve until interrupted. `ready(address)` is called once the socket listens."""
    server = make_server(host, port, dashboard_app(storage_url), handler_class=_QuietHandler)
    if ready is not None:
        ready(f"http://{host}:{server.server_port}/dashboard/")
    try:
        server.serve_forever()
    finally:
        server.server_close()
