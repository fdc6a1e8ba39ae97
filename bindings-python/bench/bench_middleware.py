"""Overhead of the Python binding and of vallum.fastapi, on loopback.

Run from the repository root (about 15-30 s)::

    /work/venv-py/bin/python bindings-python/bench/bench_middleware.py [--requests 500]

Part 1 - per-call cost of ``Firewall.scan_prompt`` on a tiny prompt next to a no-op Python call
(the difference bounds the binding overhead from above, the engine's work included), and with the
classifier on, wall time minus the engine's own ``elapsed_us``.

Part 2 - latency of ``POST /v1/chat`` (small JSON prompt in, short JSON answer out) on a real
uvicorn server, N sequential keep-alive requests with httpx, p50/p99, for: the bare app, the app
behind ``VallumMiddleware`` and the app with the ``VallumGuard`` dependency, each with the
classifier off (``{"classifier": {"enabled": false}}``) and on (the default policy). "added" is
the difference to the bare app's percentile.
"""

import argparse
import json
import socket
import statistics
import threading
import time
import timeit

import httpx
import uvicorn
from fastapi import Depends, FastAPI

import vallum
from vallum.fastapi import VallumGuard, VallumMiddleware, caller_from_header

KEY = "00112233445566778899aabbccddeeff"
PROMPT = "Summarise this article about renewable energy in three bullet points."
ANSWER = "Solar and wind keep getting cheaper; storage smooths supply; grids need upgrades."


def firewall(classifier: bool) -> "vallum.Firewall":
    doc = {"key_hex": KEY}
    if not classifier:
        doc["classifier"] = {"enabled": False}
    return vallum.Firewall(vallum.Policy.from_json(json.dumps(doc)))


def per_call(fn, number: int) -> float:
    """Best of 5 runs, microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def bench_binding() -> list:
    """(name, µs per call, engine µs per call or None)."""
    rows = []

    def noop(_text):
        return None

    rows.append(("no-op Python call noop(text)", per_call(lambda: noop(PROMPT), 200_000), None))
    tiny = "hi there"
    for clf in (False, True):
        fw = firewall(clf)
        label = f"scan_prompt({tiny!r}), classifier {'on' if clf else 'off'}"
        if clf and not fw.has_classifier:
            rows.append((label, float("nan"), None))
            continue
        fw.scan_prompt(tiny)
        if not clf:
            # The engine reports whole microseconds (0 here): no split is possible.
            rows.append((label, per_call(lambda fw=fw: fw.scan_prompt(tiny), 20_000), None))
            continue
        wall, engine = [], []
        for _ in range(300):
            t0 = time.perf_counter()
            v = fw.scan_prompt(tiny)
            wall.append((time.perf_counter() - t0) * 1e6)
            engine.append(v.elapsed_us)
        rows.append((label, statistics.median(wall), statistics.median(engine)))
    fw = firewall(False)
    rows.append(("scan_output('hello world')", per_call(lambda: fw.scan_output("hello world"), 20_000), None))
    return rows


class LiveServer:
    def __init__(self, app):
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (else every
        # response waits ~40 ms for a delayed ACK on loopback).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def make_app(kind: str, fw) -> FastAPI:
    app = FastAPI()
    if kind == "guard":
        guard = VallumGuard(fw)

        @app.post("/v1/chat")
        async def chat_guarded(body: dict, v=Depends(guard)):
            return {"answer": ANSWER}

    else:

        @app.post("/v1/chat")
        async def chat(body: dict):
            return {"answer": ANSWER}

    if kind == "middleware":
        app.add_middleware(VallumMiddleware, firewall=fw, caller_id=caller_from_header("x-api-key"))
    return app


def latencies(app, n: int) -> list:
    body = {"messages": [{"role": "user", "content": PROMPT}]}
    # TCP_NODELAY on the client too: the request head and body are separate writes.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with LiveServer(app) as s, httpx.Client(base_url=s.url, headers={"x-api-key": "bench"},
                                            transport=transport) as c:
        for _ in range(max(20, n // 10)):  # warm-up: connections, threads, classifier sessions
            c.post("/v1/chat", json=body).raise_for_status()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/chat", json=body)
            out.append((time.perf_counter() - t0) * 1e6)
            if r.status_code != 200:
                raise RuntimeError(f"unexpected {r.status_code}: {r.text[:200]}")
    return out


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    t_start = time.monotonic()

    print(f"vallum {vallum.__version__}; prompt {len(PROMPT)} bytes; {args.requests} sequential requests per row\n")
    print("Binding, per call                                  us/call  vs no-op  engine us  binding us")
    rows = bench_binding()
    noop_us = rows[0][1]
    for name, wall, engine in rows:
        vs = f"{wall - noop_us:8.2f}" if name != rows[0][0] else "       -"
        eng = f"{engine:9.0f}" if engine is not None else "        -"
        ovh = f"{wall - engine:10.0f}" if engine is not None else "         -"
        print(f"  {name:46s} {wall:8.2f}  {vs}  {eng}  {ovh}")
    print("  (vs no-op = the whole native call, engine work included: an upper bound of the binding cost;")
    print("   with the classifier: binding = median wall - median engine-reported elapsed_us)")

    print("\nHTTP POST /v1/chat on loopback                    p50 us    p99 us  added p50  added p99")
    fws = {False: firewall(False), True: firewall(True)}
    base = latencies(make_app("bare", None), args.requests)
    b50, b99 = pct(base, 50), pct(base, 99)
    print(f"  {'bare app (no Vallum)':46s} {b50:8.0f}  {b99:8.0f}          -          -")
    for kind in ("middleware", "guard"):
        for clf in (False, True):
            fw = fws[clf]
            label = f"{kind}, classifier {'on' if clf else 'off'}"
            if clf and not fw.has_classifier:
                print(f"  {label:46s}  (classifier not available)")
                continue
            xs = latencies(make_app(kind, fw), args.requests)
            p50, p99 = pct(xs, 50), pct(xs, 99)
            print(f"  {label:46s} {p50:8.0f}  {p99:8.0f}   {p50 - b50:8.0f}   {p99 - b99:8.0f}")
    print(f"\n(total {time.monotonic() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
