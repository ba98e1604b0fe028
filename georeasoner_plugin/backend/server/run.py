"""Running the service: bind, announce, serve with uvicorn until interrupted."""
from __future__ import annotations

import asyncio
import copy
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ...core.api import is_loopback_host, listening_line
from .app import create_app
from .connections import effective_max_connections, guarded_protocol, loop_exception_handler
from .config import ServiceConfig
from .service import Loader, Service

log = logging.getLogger("georeasoner.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back from getsockname())."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    infos = socket.getaddrinfo(bare, port, family if ":" in bare else socket.AF_UNSPEC, socket.SOCK_STREAM)
    family, socktype, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio turns Nagle's algorithm off only on sockets that say
    # so, and with it on, every keep-alive response waits for a delayed ACK (40 ms on Linux).
    sock = socket.socket(family, socktype, proto or socket.IPPROTO_TCP)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def exposure_warning(host: str) -> Optional[str]:
    """What to print when the server is reachable from other machines; None on loopback."""
    if is_loopback_host(host):
        return None
    return (f"warning: listening on {host}, reachable from other machines: anyone with the token can use this "
            f"server and its GPU, and the traffic (token included) is not encrypted. Use a firewall, or keep "
            f"--host 127.0.0.1 and reach it through an SSH tunnel.")


def url_of(sock: socket.socket) -> str:
    address = sock.getsockname()
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


class NoQueryString(logging.Filter):
    """The access log never shows a query string: our API takes none, and a client that puts its
    token there (?token=...) must not find it in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = args[:2] + (args[2].split("?", 1)[0] + "?<query omitted>",) + args[3:]
        return True


def uvicorn_config(app, config: ServiceConfig, *, log_level: str = "info"):
    """uvicorn's settings for the service: httptools (else h11) with the connection guards, keep-alive timeout, logs
    on stderr (stdout carries only the lines a launching client parses: token file, URL), an access
    log with method, path and status only (never headers or query strings: the token travels there)."""
    import uvicorn

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    log_config.setdefault("filters", {})["no_query"] = {"()": f"{__name__}.NoQueryString"}
    log_config["handlers"]["access"]["filters"] = ["no_query"]
    protocol = guarded_protocol(header_timeout_s=config.header_timeout_s, body_timeout_s=config.body_timeout_s,
                                max_connections=effective_max_connections(config.max_connections),
                                parser=config.http_parser)
    return uvicorn.Config(app, http=protocol, log_level=log_level, log_config=log_config, access_log=True,
                          proxy_headers=False, server_header=False, timeout_keep_alive=config.keep_alive_s,
                          timeout_graceful_shutdown=1, lifespan="off", ws="none")


def make_server(app, service: Service, url: str, *, log_level: str = "info"):
    """The uvicorn server with the service's start-up line and graceful shutdown."""
    import uvicorn

    grace_s = service.config.shutdown_grace_s

    class GeoReasonerServer(uvicorn.Server):
        async def startup(self, sockets=None):
            asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
            await super().startup(sockets=sockets)
            if self.started:
                print(listening_line(url), flush=True)

        def handle_exit(self, sig, frame) -> None:
            if sig == getattr(signal, "SIGTERM", None):
                # A graceful stop on SIGTERM is a normal end (exit status 0): not re-raised afterwards.
                self.force_exit = self.force_exit or self.should_exit
                self.should_exit = True
                return
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None):
            # 1. Stop accepting: new connections are refused from now on.
            for server in getattr(self, "servers", []):
                server.close()
            # 2. Nothing new is admitted; queued requests end with 503 shutting_down; the running one
            #    has the grace period, then ends the same way.
            log.info("shutting down: no new connections; the running request has %g s to finish", grace_s)
            service.begin_shutdown(grace_s)
            # 3. Let the answers and final events reach their clients before connections are closed.
            deadline = time.monotonic() + grace_s + 2.0
            while time.monotonic() < deadline and not self.force_exit and \
                    (service.busy() or self.server_state.tasks):
                await asyncio.sleep(0.05)
            await super().shutdown(sockets=sockets)

    return GeoReasonerServer(uvicorn_config(app, service.config, log_level=log_level))


def run_server(config: ServiceConfig, *, host: str, port: int, token: str, token_file: Path,
               log_level: str = "info", loader: Optional[Loader] = None, routers: Sequence = ()) -> None:
    """Bind, announce the URL on stdout, load the models in the background, serve until SIGTERM or
    Ctrl+C, then shut down gracefully (README "Security model")."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loopback = is_loopback_host(host)
    sock = bind_socket(host, port)
    url = url_of(sock)
    service = Service(config, loader=loader)
    app = create_app(service, token=token, loopback_only=loopback, routers=routers)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"Token file: {token_file} (send its content as 'Authorization: Bearer <token>')", flush=True)
    server = make_server(app, service, url, log_level=log_level)
    service.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
