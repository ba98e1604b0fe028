"""HTTP backend benchmark: what the service adds on top of the cascade.

1. Latency (p50, p95) and throughput with 1, 4 and 16 concurrent clients against `georeasoner
   serve` running tiny real models (one worker: requests queue, so latency grows with clients while
   throughput stays that of one worker).
2. The overhead of the HTTP path over an in-process cascade call for a 2048 x 2048 image, sent in
   each image transport the plugin uses (core/transport.py: a path in a shared capture folder or an
   uncompressed TIFF on loopback, PNG or lossless WebP to a remote backend), plus the client's time to
   encode it (Pillow here, Qt in the plugin; same codecs), measured on a replay server without SAM2
   so that the cascade itself costs almost nothing. "Transfer" is the same request, through the same
   client, to a bare socket server that only reads the body (the floor for any HTTP server in
   Python); the server's own stages come from the answer's Server-Timing header (core/api.py).
   Target: overhead <= transfer + 15 ms for the loopback transports. A 64 x 64 image shows the
   fixed part alone.
3. Peak RSS of a replay server (default limits: --queue-size 8, --image-memory-mb 1024) while 12
   clients send 8000 x 8000 1-bit PNGs at once (a few KB each, 192 MB decoded). Goal: at most
   1.5 GiB above idle (the image memory budget plus what the running request's cascade allocates).

Run: ``python bench/bench_server.py [concurrency] [overhead] [memory]`` (all three by default) or
call ``run()``. The servers bind 127.0.0.1 only.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
from PIL import Image, features

from georeasoner_plugin.core.api import (ASK_PATH, HEALTH_PATH, SERVER_TIMING_HEADER, parse_listening_line,
                                         parse_server_timing)

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip_nd_2020.tif"
RECORDED = ROOT / "examples" / "naip_lakes_remotereasoner.txt"
QUESTION = "Which lakes could supply irrigation water to the fields around them?"


class _Server:
    def __init__(self, args: List[str], workdir: Path):
        self.token_file = workdir / "token"
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "georeasoner_plugin.backend.cli", "serve", "--port", "0", "--log-level", "warning",
             "--token-file", str(self.token_file), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:
            url = parse_listening_line(line)
            if url:
                self.url = url
                break
        else:
            raise RuntimeError("the benchmark server did not start")
        deadline = time.monotonic() + 180
        while httpx.get(f"{self.url}{HEALTH_PATH}").json()["status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not load its models")
            time.sleep(0.1)
        self.headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process.stdout.close()


_ENCODE_OPTIONS = {"PNG": {"compress_level": 1}, "TIFF": {},
                   # lossless, as the plugin sends it (Qt's WebP writer at quality 100 is lossless)
                   "WEBP": {"lossless": True, "quality": 100}}
_MIME = {"PNG": "image/png", "TIFF": "image/tiff", "WEBP": "image/webp"}


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **_ENCODE_OPTIONS[fmt])
    return buffer.getvalue()


def _image(size: int) -> np.ndarray:
    """A crop of the NAIP sample tiled up to size x size (real texture); noise when the sample is absent."""
    if NAIP.exists():
        from georeasoner_plugin.backend.imagery import read_raster

        rgb = read_raster(NAIP).rgb
        reps = (-(-size // rgb.shape[0]), -(-size // rgb.shape[1]), 1)
        return np.ascontiguousarray(np.tile(rgb, reps)[:size, :size])
    return (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)


def _client() -> httpx.Client:
    # Qt's HTTP stack (the QGIS plugin's client) turns Nagle's algorithm off; so does this client.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(transport=transport, timeout=600)


def _post(client: httpx.Client, server: _Server, data: bytes, request: dict, mime: str = "image/png") -> float:
    return _post_timed(client, server, data, request, mime)[0]


def _post_timed(client: httpx.Client, server, data: Optional[bytes], request: dict, mime: str = "image/png",
                url: Optional[str] = None):
    """(seconds, the server's Server-Timing in ms); `data` None: only the JSON part (a shared capture)."""
    files = {"image": ("capture", data, mime)} if data is not None else {"request": (None, json.dumps(request))}
    form = {"request": json.dumps(request)} if data is not None else None
    started = time.perf_counter()
    response = client.post(url or f"{server.url}{ASK_PATH}", headers=getattr(server, "headers", None), files=files,
                           data=form)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"benchmark request failed: {response.status_code} {response.text[:200]}")
    return elapsed, parse_server_timing(response.headers.get(SERVER_TIMING_HEADER))


class _Sink:
    """A bare HTTP/1.1 server in its own process that reads each request's body into one reused buffer
    and answers 200: what moving the bytes costs through the same client, with no HTTP framework."""

    CODE = """
import socket, sys, threading
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
server.bind(("127.0.0.1", 0)); server.listen(8)
print(server.getsockname()[1], flush=True)
def serve(connection):
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = memoryview(bytearray(1 << 26)); pending = b""
    while True:
        while b"\\r\\n\\r\\n" not in pending:
            data = connection.recv(65536)
            if not data:
                return
            pending += data
        head, _, rest = pending.partition(b"\\r\\n\\r\\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\\r\\n") if line.lower().startswith(b"content-length:"))
        received = len(rest)
        while received < length:
            count = connection.recv_into(buffer[:min(len(buffer), length - received)])
            if not count:
                return
            received += count
        pending = b""
        connection.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\n{}")
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", self.CODE], stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.process.stdout.close()


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _concurrency(server: _Server, data: bytes, clients: int, per_client: int) -> Dict[str, object]:
    request = {"question": QUESTION, "max_new_tokens": 16}

    def one_client(_):
        with _client() as client:
            return [_post(client, server, data, request) for _ in range(per_client)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for batch in pool.map(one_client, range(clients)) for t in batch]
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "p50_ms": _percentile(latencies, 50) * 1000,
            "p95_ms": _percentile(latencies, 95) * 1000, "throughput_rps": len(latencies) / wall}


def _median_time(function, repeat: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _overhead(server: _Server, sink: _Sink, array: np.ndarray, fmt: str, repeat: int) -> Dict[str, object]:
    """Medians of interleaved runs (a busy machine slows all of them alike, not one of them). `fmt`
    PATH: the capture is written as an uncompressed TIFF into the server's shared folder, and only
    its path travels."""
    from georeasoner_plugin.backend.cascade import AskOptions, Cascade

    recorded = RECORDED.read_text(encoding="utf-8")
    options = AskOptions(granularities=("boxes", "points"))
    cascade = Cascade()
    started = time.perf_counter()
    data = _encode(array, "TIFF" if fmt == "PATH" else fmt)
    request = {"question": QUESTION, "outputs": ["boxes", "points"]}
    if fmt == "PATH":  # the plugin writes the capture into the shared folder: part of its encoding time
        fd, path = tempfile.mkstemp(prefix="capture-", suffix=".tif", dir=server.shared_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        request["image_path"], data = path, None
    encode_ms = (time.perf_counter() - started) * 1000  # once: lossless WebP of 2048² takes seconds
    mime = _MIME.get(fmt, "image/tiff")
    refused = {"question": " "}  # parsed, then refused before decoding: upload + multipart + JSON only
    timings: Dict[str, List[float]] = {"in_process": [], "http": [], "transfer": [], "upload": []}
    server_side: List[Dict[str, float]] = []
    with _client() as client:
        def http():
            cpu = _cpu_s(server.process.pid)
            timing = _post_timed(client, server, data, request, mime)[1]
            server_side.append({**timing, "cpu": (_cpu_s(server.process.pid) - cpu) * 1000})

        def upload():
            client.post(f"{server.url}{ASK_PATH}", headers=server.headers, data={"request": json.dumps(refused)},
                        files={"image": ("capture", data if data is not None else b"", mime)})

        steps = {
            "in_process": lambda: cascade.run(array, QUESTION, options=options, raw_output=recorded),
            "http": http,
            "transfer": lambda: _post_timed(client, sink, data, request, mime, url=sink.url),
            "upload": upload,
        }
        for step in steps.values():  # warm-up
            step()
        server_side.clear()
        for _ in range(repeat):
            for name, step in steps.items():
                started = time.perf_counter()
                step()
                timings[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    stage = {name: statistics.median(t.get(name, 0.0) for t in server_side) for name in ("read", "decode", "queue")}
    cpu_ms = sum(t["cpu"] for t in server_side) / len(server_side) if server_side else 0.0
    overhead = median["http"] - median["in_process"]
    return {"image": f"{array.shape[1]} x {array.shape[0]} {fmt}", "body_mb": len(data or b"") / 2**20,
            "in_process_ms": median["in_process"], "http_ms": median["http"], "overhead_ms": overhead,
            "transfer_ms": median["transfer"], "over_transfer_ms": overhead - median["transfer"],
            "read_ms": stage["read"], "decode_ms": stage["decode"], "queue_ms": stage["queue"],
            "server_cpu_ms": cpu_ms, "upload_ms": median["upload"], "encode_ms": encode_ms}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process used so far (Linux /proc; 0 elsewhere): the server's
    own work per request, which a machine busy with other jobs stretches in wall time, not in CPU."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _peak_rss_bombs(server: _Server, clients: int = 12, side: int = 8000) -> Dict[str, object]:
    """Peak RSS above idle while `clients` send side x side 1-bit PNGs at once (Linux /proc)."""
    from collections import Counter

    buffer = io.BytesIO()
    Image.new("1", (side, side), 0).save(buffer, format="PNG")
    data = buffer.getvalue()
    pid = server.process.pid
    idle = _rss_kib(pid, "VmRSS")
    request = {"question": QUESTION, "outputs": ["boxes", "points"]}
    with ThreadPoolExecutor(clients) as pool, _client() as client:
        statuses = Counter(pool.map(lambda _: client.post(f"{server.url}{ASK_PATH}", headers=server.headers,
                                                          files={"image": ("bomb.png", data, "image/png")},
                                                          data={"request": json.dumps(request)}).status_code,
                                    range(clients)))
    peak = _rss_kib(pid, "VmHWM")
    return {"clients": clients, "png_kb": len(data) / 1024, "idle_mib": idle / 1024, "peak_mib": peak / 1024,
            "above_idle_mib": (peak - idle) / 1024, "statuses": dict(statuses)}


PARTS = ("concurrency", "overhead", "memory")


def run(print_table: bool = True, parts=PARTS) -> Dict[str, List[Dict[str, object]]]:
    results: Dict[str, List[Dict[str, object]]] = {"concurrency": [], "overhead": [], "memory": []}
    with tempfile.TemporaryDirectory(prefix="georeasoner-bench-") as tmp:
        workdir = Path(tmp)
        if "concurrency" in parts:
            _run_concurrency(workdir, results)
        if "overhead" in parts:
            _run_overhead(workdir, results)
        if "memory" in parts and os.path.exists("/proc/self/status"):
            (workdir / "memory").mkdir()
            fresh = _Server(["--reasoner-output", str(RECORDED), "--segmenter", "none"], workdir / "memory")
            try:
                results["memory"].append(_peak_rss_bombs(fresh))
            finally:
                fresh.stop()
    if print_table:
        _print(results)
    return results


def _run_concurrency(workdir: Path, results) -> None:
    from georeasoner_plugin.backend.tiny import make_tiny_models

    models = make_tiny_models(workdir / "tiny")
    (workdir / "live").mkdir()
    live = _Server(["--reasoner", str(models["reasoner"]), "--segmenter", str(models["segmenter"]),
                        "--device", "cpu", "--queue-size", "64"], workdir / "live")
    try:
        data = _encode(_image(512), "PNG")
        with _client() as client:  # warm-up: first generation, first SAM2 encoding
            _post(client, live, data, {"question": QUESTION, "max_new_tokens": 16})
        for clients, per_client in ((1, 8), (4, 4), (16, 2)):
            results["concurrency"].append(_concurrency(live, data, clients, per_client))
    finally:
        live.stop()


def _run_overhead(workdir: Path, results) -> None:
    for folder in ("replay", "shared"):
        (workdir / folder).mkdir()
    replay = _Server(["--reasoner-output", str(RECORDED), "--segmenter", "none", "--shared-capture-dir",
                      str(workdir / "shared")], workdir / "replay")
    replay.shared_dir = workdir / "shared"
    sink = _Sink()
    try:
        results["overhead"].append(_overhead(replay, sink, _image(64), "PNG", repeat=30))
        big = _image(2048)
        for fmt in ("PATH", "TIFF", "PNG"):
            results["overhead"].append(_overhead(replay, sink, big, fmt, repeat=9))
        if features.check("webp"):
            results["overhead"].append(_overhead(replay, sink, big, "WEBP", repeat=5))
    finally:
        replay.stop()
        sink.stop()


def _print(results) -> None:
    if results["concurrency"]:
        print("HTTP backend: tiny Qwen2.5-VL + tiny SAM2, 512 x 512 PNG, 16 new tokens, all outputs")
        print(f"{'clients':>8} {'requests':>9} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>7}")
        for row in results["concurrency"]:
            print(f"{row['clients']:>8} {row['requests']:>9} {row['p50_ms']:>9.0f} {row['p95_ms']:>9.0f} "
                  f"{row['throughput_rps']:>7.2f}")
        print()
    if not results["overhead"]:
        return _print_memory(results)
    print("HTTP path over an in-process cascade call (replayed answer, boxes and points; medians of interleaved runs)")
    print(f"{'image':>20} {'body MB':>8} {'in-proc':>8} {'HTTP':>7} {'overhead':>9} {'transfer':>9} "
          f"{'over tr.':>9} {'read':>6} {'decode':>7} {'queue':>6} {'srv CPU':>8} {'upload':>7} {'encode':>7}")
    for row in results["overhead"]:
        print(f"{row['image']:>20} {row['body_mb']:>8.2f} {row['in_process_ms']:>8.1f} {row['http_ms']:>7.1f} "
              f"{row['overhead_ms']:>9.1f} {row['transfer_ms']:>9.1f} {row['over_transfer_ms']:>9.1f} "
              f"{row['read_ms']:>6.1f} {row['decode_ms']:>7.1f} {row['queue_ms']:>6.1f} {row['server_cpu_ms']:>8.1f} "
              f"{row['upload_ms']:>7.1f} {row.get('encode_ms', 0.0):>7.0f}")
    print("ms; overhead = HTTP - in-process; transfer = the same request to a bare socket server that only reads "
          "the body; over tr. = overhead - transfer (target <= 15 ms on loopback: PATH, TIFF); read, decode, queue = "
          "the server's stages (Server-Timing: body read and parsed, image decoded, queue hand-over); srv CPU = the "
          "server process's CPU time per request (mean; its own work, unlike wall times not stretched by other jobs "
          "on the machine); upload = a request refused right after parsing; encode = the client's encoding (PATH: "
          "and writing the file), once")
    _print_memory(results)


def _print_memory(results) -> None:
    for row in results.get("memory", []):
        print()
        print(f"Peak RSS, {row['clients']} concurrent 8000 x 8000 1-bit PNGs ({row['png_kb']:.0f} KB each) on a "
              f"replay server with default limits: idle {row['idle_mib']:.0f} MiB, peak {row['peak_mib']:.0f} MiB, "
              f"+{row['above_idle_mib']:.0f} MiB above idle (goal <= 1536); answers {row['statuses']}")

if __name__ == "__main__":  # python bench/bench_server.py [concurrency] [overhead] [memory]
    unknown = set(sys.argv[1:]) - set(PARTS)
    if unknown:
        sys.exit(f"unknown part(s) {', '.join(sorted(unknown))}; pick from {', '.join(PARTS)}")
    run(parts=tuple(sys.argv[1:]) or PARTS)
