"""The Prefect server `kocap ui start` runs: Prefect's own app (API, UI and services, as `prefect server
start` builds it) behind a Host check, with CORS limited to its own origin.

    python -m kocap.ui_server --port 4200

A web page the user happens to open cannot drive the API (and through it the deployments a local
worker executes): a cross-origin request gets no CORS grant, and a DNS-rebinding request, which
arrives with the attacker's name in its Host header, is refused with 400. To reach it from another
machine, put an authenticating reverse proxy in front (README, operations) rather than widening these.
"""

from __future__ import annotations

import argparse
import os

HOSTS = ["127.0.0.1", "localhost"]


def origins(port: int) -> str:
    return ",".join(f"http://{h}:{port}" for h in HOSTS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=4200)
    args = ap.parse_args()
    os.environ.update(
        {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(args.port),
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": origins(args.port),
        }
    )
    import prefect
    import uvicorn
    from prefect.server.api.server import create_app
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = TrustedHostMiddleware(create_app(final=True), allowed_hosts=HOSTS)
    uvicorn.run(
        app,
        app_dir=str(prefect.__module_path__.parent),
        host="127.0.0.1",
        port=args.port,
        timeout_keep_alive=5,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
