"""Running the service: bind, announce, serve with uvicorn until interrupted."""
from __future__ import annotations

import copy
import logging
import socket
import sys
from pathlib import Path
from typing import Optional

from ...core.api import is_loopback_host, listening_line
from .app import create_app
from .config import ServiceConfig
from .service import Loader, Service


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


def run_server(config: ServiceConfig, *, host: str, port: int, token: str, token_file: Path,
               log_level: str = "info", loader: Optional[Loader] = None) -> None:
    """Bind, announce the URL on stdout, load the models in the background, serve until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loopback = is_loopback_host(host)
    sock = bind_socket(host, port)
    url = url_of(sock)
    service = Service(config, loader=loader)
    app = create_app(service, token=token, loopback_only=loopback)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"Token file: {token_file} (send its content as 'Authorization: Bearer <token>')", flush=True)

    class _AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(listening_line(url), flush=True)

    # Logs go to stderr: stdout carries only the lines a launching client parses (token file, URL).
    # The access log shows method, path and status, never headers (the token travels in one).
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn_config = uvicorn.Config(app, log_level=log_level, log_config=log_config, access_log=True,
                                    proxy_headers=False, server_header=False, timeout_graceful_shutdown=3,
                                    lifespan="off")
    server = _AnnouncingServer(uvicorn_config)
    service.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
