#!/usr/bin/env python3
"""The benchmark harness behind `scripts/bench` (run that, not this).

Starts the reference services and the three gateways from release binaries, drives every scenario
of docs/BENCHMARKS.md with `wrk` (steady load), a small bounded Python client (cold probes, the
stampede, the slow service) or `bench-live` (thousands of WebSocket subscriptions), reads the
reference services' request counters around each run, and writes docs/BENCHMARKS.md. Only
127.0.0.1 is ever contacted; every loop is bounded in count and time; every process started here
is stopped here, by PID.

Settings (environment variables, all optional):
  BENCH_QUICK=1            smoke test: short runs, one repetition, few probes (~1 minute)
  BENCH_LATENCY            latency of every reference-service call (default 10ms)
  BENCH_DURATION           seconds per wrk run (default 5, quick 2)
  BENCH_RUNS               repetitions of each wrk scenario; the median is reported (default 3, quick 1)
  BENCH_CONNECTIONS        wrk connections (default 64)
  BENCH_PROBES             requests per cold/warm latency probe (default 40, quick 10)
  BENCH_RESTARTS           gateway restarts for the cold home screen (default 15, quick 4)
  BENCH_STAMPEDE           concurrent requests in the stampede (default 1000)
  BENCH_SLOW_REQUESTS      requests per gateway against the slow product service (default 240, quick 60)
  BENCH_SCALE_PRODUCTS     cold products in the scale-out request mix, each asked for 3 times (default
                           300, quick 30)
  BENCH_EVENT_CHANGES      price changes timed from the change to its eviction (default 120, quick 20)
  BENCH_EVENT_MIX_SECONDS  seconds of the read-mostly mix with a price change each second, per
                           configuration (default 15, quick 4)
  BENCH_LIVE_SOCKETS       idle WebSocket subscriptions held at once (default 10000, quick 1000)
  BENCH_LIVE_IDLE_SECONDS  seconds the gateway's CPU is measured while they idle (default 15, one
                           keep-alive period; quick 3)
  BENCH_LIVE_FANOUT        subscribers of the one product whose price changes (default 1000, quick 200)
  BENCH_LIVE_CHANGES       price changes timed to every subscriber, one a second (default 10, quick 3)
  BENCH_REDIS_REQUESTS     requests of each kind whose Redis cost is measured (default 3000, quick 300)
  BENCH_REDIS_EVENTS       change events whose Redis cost is measured, per row (default 300, quick 40)
  BENCH_REDIS_SUBSCRIBERS  WebSocket subscriptions following them (default 100, quick 20)
  BENCH_REDIS_IDLE_SECONDS idle window measured (and subtracted) per replica set (default 5, quick 2)
  BENCH_ONLY=live          run only the live-updates section and rewrite only that section of the
                           report (and its Method line); the other sections stay as they are
  BENCH_ONLY=redis         likewise for the Redis cost section (Redis commands, time and bytes per
                           request kind: the measurements behind docs/SCALING.md)
  BENCH_PORT_BASE          first of the ports used (default 19100; twenty-six consecutive ports;
                           the private redis-servers take any free port)
  BENCH_OUT                where the report goes (default docs/BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

HOST = "127.0.0.1"


def env_int(name: str, default: int, quick: int | None = None) -> int:
    if name in os.environ:
        return int(os.environ[name])
    if quick is not None and os.environ.get("BENCH_QUICK") == "1":
        return quick
    return default


QUICK = os.environ.get("BENCH_QUICK") == "1"
LATENCY = os.environ.get("BENCH_LATENCY", "10ms")
DURATION = env_int("BENCH_DURATION", 5, 2)
RUNS = env_int("BENCH_RUNS", 3, 1)
CONNECTIONS = env_int("BENCH_CONNECTIONS", 64)
PROBES = env_int("BENCH_PROBES", 40, 10)
RESTARTS = env_int("BENCH_RESTARTS", 15, 4)
STAMPEDE = env_int("BENCH_STAMPEDE", 1000)
SLOW_REQUESTS = env_int("BENCH_SLOW_REQUESTS", 240, 60)
PORT_BASE = env_int("BENCH_PORT_BASE", 19100)
# Scale-out (Redis): the cold mix (each product asked for MIX_REPEATS times, spread round-robin
# over the replicas, MIX_CONCURRENCY at a time); sub-millisecond probes, more of them than
# PROBES so that their p99 is not just their maximum; products per L2-hit wrk run.
SCALE_PRODUCTS = env_int("BENCH_SCALE_PRODUCTS", 300, 30)
MIX_REPEATS = 3
MIX_CONCURRENCY = 16
SCALE_PROBES = 5 * PROBES
L2_RUN_PRODUCTS = 400
SLOW_LATENCY = "100ms"  # 10x the default per-call latency
DEADLINE_MS = 3000.0  # downstream.deadline default, the budget of every gateway's requests
CART_LINES = 20

PORTS = {
    "product": PORT_BASE + 1,
    "cart": PORT_BASE + 2,
    "order": PORT_BASE + 3,
    "bff-web": PORT_BASE + 4,
    "bff-mobile": PORT_BASE + 5,
    "bff-partner": PORT_BASE + 6,
    "baseline": PORT_BASE + 7,
    "bff-partner-quiet": PORT_BASE + 8,
    # bff-all: the three gateways in one process, on ports of their own.
    "bff-all": PORT_BASE + 9,
    "bff-all-mobile": PORT_BASE + 10,
    "bff-all-partner": PORT_BASE + 11,
    # Scale-out (Redis): bff-mobile replicas started for that section only, and their /metrics.
    "mobile-r1": PORT_BASE + 12,
    "mobile-r2": PORT_BASE + 13,
    "mobile-r3": PORT_BASE + 14,
    "mobile-r4": PORT_BASE + 15,
    "mobile-r1-metrics": PORT_BASE + 16,
    "mobile-r2-metrics": PORT_BASE + 17,
    "mobile-r3-metrics": PORT_BASE + 18,
    "mobile-r4-metrics": PORT_BASE + 19,
    # Live updates: a bff-web with Redis and raised stream limits, started for that section only.
    "web-live": PORT_BASE + 20,
    "web-live-metrics": PORT_BASE + 21,
    # Redis cost per request: a bff-partner and a second bff-web with Redis, for that section only
    # (it also uses mobile-r1, mobile-r2 and web-live, whose sections are over by then).
    "partner-redis": PORT_BASE + 22,
    "partner-redis-metrics": PORT_BASE + 23,
    "web-live-b": PORT_BASE + 24,
    "web-live-b-metrics": PORT_BASE + 25,
}
SERVICES = ("product", "cart", "order")
GATEWAYS = ("bff-web", "bff-mobile", "bff-partner")

WEB_PRODUCT_QUERY = (
    "query Product($id: ID!) { product(id: $id) { id name brand description "
    "price { formatted } listPrice { formatted } discountPercentage "
    "availability { status quantity } rating { average count } "
    "image(width: 600) { url width height alt } } }"
)
# The web cart row's throughput in the report before the fast path (#23): the 2× target's base.
CART_RPS_BEFORE = 4221

WEB_CART_QUERY = (
    "{ viewer { cart { itemCount lines { quantity product { id name "
    "price { formatted } availability { status } image(width: 100) { url } } } } } }"
)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Credentials (the gateways are given a fresh secret and key each run; nothing is built in)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret: str, user: str) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": user, "iat": now, "exp": now + 3600}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.popen.pid


class Stack:
    """Every process this harness started, so that all of them are stopped, by PID."""

    def __init__(self, bin_dir: str, work_dir: str, gateway_cpu: str | None, other_cpu: str | None):
        self.bin_dir = bin_dir
        self.work_dir = work_dir
        self.gateway_cpu = gateway_cpu
        self.other_cpu = other_cpu
        self.procs: dict[str, Proc] = {}
        self.secret = "bench-secret-" + os.urandom(24).hex()
        self.partner_key = "bffbench_" + os.urandom(16).hex()
        self.peak_rss_kb: dict[str, int] = {}

    def pinned(self, cpu: str | None, argv: list[str]) -> list[str]:
        if cpu is not None and shutil.which("taskset"):
            return ["taskset", "-c", cpu, *argv]
        return argv

    def start(self, name: str, argv: list[str], env: dict[str, str], cpu: str | None) -> Proc:
        log_path = os.path.join(self.work_dir, f"{name}.log")
        out = open(log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env)
        popen = subprocess.Popen(
            self.pinned(cpu, argv), stdout=out, stderr=subprocess.STDOUT, env=full_env,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def start_service(self, service: str, events_redis_url: str | None = None) -> None:
        """A reference service; given `events_redis_url`, it publishes its change events there."""
        events = ["--events-redis-url", events_redis_url] if events_redis_url else []
        self.start(
            service,
            [os.path.join(self.bin_dir, "reference-services"), "--service", service,
             "--listen", f"{HOST}:{PORTS[service]}", "--latency", LATENCY, *events],
            {"RUST_LOG": "warn"},
            self.other_cpu,
        )

    def gateway_env(self, name: str) -> dict[str, str]:
        env = {
            "BFF_LISTEN_ADDR": f"{HOST}:{PORTS[name]}",
            "BFF_PRODUCT_URL": f"http://{HOST}:{PORTS['product']}",
            "BFF_CART_URL": f"http://{HOST}:{PORTS['cart']}",
            "BFF_ORDER_URL": f"http://{HOST}:{PORTS['order']}",
            # /metrics on a free loopback port of its own (two partner gateways run at once).
            "BFF_SERVER__METRICS_LISTEN_ADDR": f"{HOST}:0",
        }
        if name in ("bff-web", "bff-mobile"):
            env["BFF_GATEWAY__AUTH__HS256_SECRET"] = self.secret
        else:
            key_hash = hashlib.sha256(self.partner_key.encode()).hexdigest()
            # The one deviation from the defaults: the benchmark key's quota is high enough that
            # the rate limiter (still on the path of every request) never answers 429.
            env["BFF_GATEWAY__KEYS"] = (
                f'[{{sha256="{key_hash}",partner_id="partner-acme",'
                f'scopes=["catalog:read","orders:read","orders:write"],'
                f"rate_limit={{per_second=1000000,burst=1000000}}}}]"
            )
        return env

    def start_gateway(self, name: str) -> None:
        if name == "bff-partner-quiet":
            # The same gateway logging only warnings: shows what per-request logging costs.
            env = self.gateway_env("bff-partner")
            env["BFF_LISTEN_ADDR"] = f"{HOST}:{PORTS[name]}"
            env["BFF_TELEMETRY__FILTER"] = "warn"
            self.start(name, [os.path.join(self.bin_dir, "bff-partner")], env, self.gateway_cpu)
            return
        self.start(name, [os.path.join(self.bin_dir, name)], self.gateway_env(name), self.gateway_cpu)

    def start_all(self) -> None:
        """bff-all: each gateway's settings in its own section, the shared ones once."""
        env: dict[str, str] = {}
        for gateway, port_name in (("bff-web", "bff-all"), ("bff-mobile", "bff-all-mobile"),
                                   ("bff-partner", "bff-all-partner")):
            section = gateway.removeprefix("bff-").upper()
            for name, value in self.gateway_env(gateway).items():
                if name == "BFF_LISTEN_ADDR":
                    name, value = f"BFF_{section}__SERVER__LISTEN_ADDR", f"{HOST}:{PORTS[port_name]}"
                elif name.startswith("BFF_SERVER__"):
                    name = f"BFF_{section}__SERVER__" + name.removeprefix("BFF_SERVER__")
                elif name.startswith("BFF_GATEWAY__"):
                    name = f"BFF_{section}__GATEWAY__" + name.removeprefix("BFF_GATEWAY__")
                env[name] = value
        self.start("bff-all", [os.path.join(self.bin_dir, "bff-all")], env, self.gateway_cpu)

    def start_baseline(self, answers_dir: str) -> None:
        self.start(
            "baseline",
            [os.path.join(self.bin_dir, "bench-baseline"), f"{HOST}:{PORTS['baseline']}", answers_dir],
            {},
            self.gateway_cpu,
        )

    def start_redis(self, port: int) -> None:
        """A private redis-server (no persistence) on `port`, next to the reference services."""
        self.start(
            "redis",
            ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
             "no", "--protected-mode", "no", "--dir", self.work_dir],
            {},
            self.other_cpu,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.procs["redis"].popen.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.procs['redis'].log_path}")
            try:
                if redis_command(port, "PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def start_mobile_replica(self, name: str, redis_url: str | None,
                             extra: dict[str, str] | None = None) -> None:
        """A bff-mobile replica of the scale-out section (`name` is one of mobile-r1…r4), with
        its /metrics on a port of its own, sharing `redis_url` (None: no Redis at all)."""
        env = self.gateway_env("bff-mobile")
        env["BFF_LISTEN_ADDR"] = f"{HOST}:{PORTS[name]}"
        env["BFF_SERVER__METRICS_LISTEN_ADDR"] = f"{HOST}:{PORTS[name + '-metrics']}"
        # Empty means unset, also when the caller's environment has a BFF_REDIS_URL.
        env["BFF_REDIS_URL"] = redis_url or ""
        env.update(extra or {})
        self.start(name, [os.path.join(self.bin_dir, "bff-mobile")], env, self.gateway_cpu)

    def wait_healthy(self, names: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            path = "/health" if name != "baseline" else "/__none__"
            while True:
                proc = self.procs[name]
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited during start-up; see {proc.log_path}")
                try:
                    status, _, _ = request("GET", PORTS[name], path, timeout=1.0)
                    if status == 200 or (name == "baseline" and status == 404):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become healthy; see {proc.log_path}")
                time.sleep(0.05)

    def sample_rss(self, name: str) -> int:
        """Peak resident set size (VmHWM) of a running process, remembered as the maximum seen."""
        try:
            with open(f"/proc/{self.procs[name].pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        self.peak_rss_kb[name] = max(self.peak_rss_kb.get(name, 0), kb)
                        return kb
        except (OSError, KeyError):
            pass
        return 0

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.popen.poll() is not None:
            return
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


# ---------------------------------------------------------------------------------------------
# A small HTTP client (keep-alive, bounded), for set-up, probes and the slow-service scenario


def request(method: str, port: int, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        if own:
            conn.close()


def admin(service: str, method: str, path: str, body: dict | None = None) -> dict | None:
    raw = json.dumps(body).encode() if body is not None else None
    status, _, data = request(method, PORTS[service], path, raw,
                              {"content-type": "application/json"} if raw else None)
    if status >= 300:
        raise RuntimeError(f"{service} {method} {path}: {status} {data[:200]!r}")
    return json.loads(data) if data else None


def reset_counters() -> None:
    for service in SERVICES:
        admin(service, "POST", "/__admin/reset")


def read_counters() -> dict[str, dict]:
    return {service: admin(service, "GET", "/__admin/stats") for service in SERVICES}


def set_latency(service: str, latency: str) -> None:
    admin(service, "PUT", "/__admin/faults", {"latency": latency})


def redis_command(port: int, *words: str) -> bytes:
    """One command to the private redis-server; its raw reply (only short replies are read)."""
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)
    with socket.create_connection((HOST, port), timeout=5) as conn:
        conn.sendall(payload.encode())
        return conn.recv(65536)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# The counters of a scale-out replica read from its /metrics: name → (metric, labels).
REPLICA_COUNTERS = {
    "l1_hits": ("bff_cache_hits_total", {"cache": "products"}),
    "l2_hits": ("bff_cache_l2_hits_total", {"cache": "products"}),
    "l2_misses": ("bff_cache_l2_misses_total", {"cache": "products"}),
    "lease_waits": ("bff_cache_lease_waits_total", {"cache": "products"}),
    "redis_commands": ("bff_redis_commands_total", {}),
    "redis_errors": ("bff_redis_errors_total", {}),
    "redis_fallbacks": ("bff_redis_fallback_total", {}),
}
METRIC_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
METRIC_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def replica_counters(name: str) -> dict[str, float]:
    """REPLICA_COUNTERS of a replica now (each the sum of its series with those labels)."""
    status, _, body = request("GET", PORTS[name + "-metrics"], "/metrics")
    if status != 200:
        raise RuntimeError(f"{name} /metrics: {status}")
    values = dict.fromkeys(REPLICA_COUNTERS, 0.0)
    for line in body.decode().splitlines():
        m = METRIC_LINE.match(line)
        if not m:
            continue
        labels = dict(METRIC_LABEL.findall(m.group(2) or ""))
        for key, (metric, wanted) in REPLICA_COUNTERS.items():
            if m.group(1) == metric and all(labels.get(k) == v for k, v in wanted.items()):
                values[key] += float(m.group(3))
        if m.group(1) == "bff_redis_errors_total":
            # Also by operation, to say which command failed.
            key = f"redis_errors op={labels.get('op', '?')}"
            values[key] = values.get(key, 0.0) + float(m.group(3))
    return values


def counters_grown(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, float]:
    """How much each counter grew, summed over replicas."""
    keys = sorted({key for counters in after for key in counters})
    return {key: sum(a.get(key, 0.0) - b.get(key, 0.0) for b, a in zip(before, after))
            for key in keys}


def redis_trouble(counters: dict[str, float]) -> str:
    """Redis errors (by operation) and fallbacks in `counters`, or "" when there were none."""
    by_op = ", ".join(f"{key.split('=', 1)[1]} {value:.0f}" for key, value in counters.items()
                      if key.startswith("redis_errors op=") and value)
    if not counters["redis_errors"] and not counters["redis_fallbacks"]:
        return ""
    return (f"Redis errors: {counters['redis_errors']:.0f} ({by_op or 'none'}), fallbacks to "
            f"in-process behaviour: {counters['redis_fallbacks']:.0f}")


def calls_summary(stats: dict[str, dict]) -> tuple[int, dict[str, int]]:
    per_route: dict[str, int] = {}
    total = 0
    for service, s in stats.items():
        total += s["total"]
        for route, count in s["requests"].items():
            if count:
                per_route[f"{service}: {route}"] = count
    return total, per_route


@dataclass
class Req:
    """One request of a scenario, as the load generator sends it."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def run_requests(port: int | list[int], reqs: list[Req], concurrency: int,
                 timeout: float = 15.0) -> dict:
    """Sends `reqs` (each once) over `concurrency` keep-alive connections (per port); latencies
    in ms. Given several ports, request i goes to port i mod their number (round-robin)."""
    ports = port if isinstance(port, list) else [port]
    local = threading.local()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    opened: list[http.client.HTTPConnection] = []

    def one(numbered: tuple[int, Req]) -> None:
        i, r = numbered
        target = ports[i % len(ports)]
        conns = local.__dict__.setdefault("conns", {})
        if conns.get(target) is None:
            conns[target] = http.client.HTTPConnection(HOST, target, timeout=timeout)
            with lock:
                opened.append(conns[target])
        start = time.perf_counter()
        try:
            status, _, _ = request(r.method, target, r.path, r.body, r.headers, conn=conns[target])
        except (OSError, http.client.HTTPException):
            conns[target].close()
            conns[target] = None
            status = 0
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, enumerate(reqs)))
    wall = time.perf_counter() - started
    for conn in opened:
        conn.close()
    errors = sum(n for s, n in statuses.items() if not 200 <= s < 400)
    return {
        "requests": len(reqs),
        "rps": len(reqs) / wall if wall else 0.0,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else 0.0,
        "errors": errors,
        "statuses": statuses,
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


# ---------------------------------------------------------------------------------------------
# wrk


@dataclass
class Scenario:
    """A steady-load scenario driven by wrk against a gateway and against the baseline."""

    key: str
    title: str
    gateway: str
    req: Req
    cache_hit: bool
    note: str


def wrk_script(work_dir: str, name: str, req: Req) -> str:
    path = os.path.join(work_dir, f"{name}.lua")
    lines = [f'wrk.method = "{req.method}"']
    if req.body is not None:
        lines.append(f"wrk.body = {json.dumps(req.body.decode())}")
    for key, value in req.headers.items():
        lines.append(f'wrk.headers["{key}"] = {json.dumps(value)}')
    with open(path, "w") as script:
        script.write("\n".join(lines) + "\n")
    return path


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * UNITS[match.group(2)]


def wrk_cycle_script(work_dir: str, name: str, paths: list[str]) -> str:
    """A wrk script whose requests are GETs of `paths`, one after the other, round and round."""
    path = os.path.join(work_dir, f"{name}.lua")
    with open(path, "w") as script:
        script.write("local paths = {" + ", ".join(json.dumps(p) for p in paths) + "}\n"
                     "local i = 0\n"
                     "request = function()\n"
                     "  i = i % #paths + 1\n"
                     '  return wrk.format("GET", paths[i])\n'
                     "end\n")
    return path


def run_wrk(port: int, path: str, script: str, cpu: str | None, duration: int) -> dict:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "10s",
            "-s", script, f"http://{HOST}:{port}{path}"]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", cpu, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    result = {"requests": 0, "rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0}
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        result["p50"] = parse_duration_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        result["p99"] = parse_duration_ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["errors"] += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["errors"] += sum(int(g) for g in m.groups())
    if result["requests"] == 0:
        raise RuntimeError(f"wrk produced no result:\n{out}")
    return result


# ---------------------------------------------------------------------------------------------
# The stampede: N connections opened first, then N requests sent at once


async def stampede(port: int, req: Req, n: int, timeout: float = 30.0) -> dict:
    head = f"{req.method} {req.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
    for key, value in req.headers.items():
        head += f"{key}: {value}\r\n"
    body = req.body or b""
    if req.body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    raw = head.encode() + b"\r\n" + body

    connections = await asyncio.gather(
        *(asyncio.open_connection(HOST, port) for _ in range(n)), return_exceptions=True)
    opened = [c for c in connections if not isinstance(c, BaseException)]
    go = asyncio.Event()
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        start = time.perf_counter()
        status = 0
        try:
            writer.write(raw)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout)
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        except (OSError, asyncio.TimeoutError, ValueError, IndexError):
            status = 0
        finally:
            writer.close()
        latencies.append((time.perf_counter() - start) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    tasks = [asyncio.create_task(one(r, w)) for r, w in opened]
    await asyncio.sleep(0.2)
    go.set()
    await asyncio.gather(*tasks)
    return {
        "opened": len(opened),
        "statuses": statuses,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "errors": n - statuses.get(200, 0),
    }


# ---------------------------------------------------------------------------------------------
# The run


def product_id(n: int) -> str:
    return f"p-{n:05d}"


def user_id(n: int) -> str:
    return f"u-{n:04d}"


def web_product(pid: str) -> Req:
    body = json.dumps({"query": WEB_PRODUCT_QUERY, "variables": {"id": pid}}).encode()
    return Req("POST", "/graphql", {"Content-Type": "application/json"}, body)


def signed_in(req: Req, token: str) -> Req:
    """`req` with a bearer token."""
    return Req(req.method, req.path, {**req.headers, "Authorization": f"Bearer {token}"}, req.body)


def web_cart(token: str) -> Req:
    body = json.dumps({"query": WEB_CART_QUERY}).encode()
    return Req("POST", "/graphql",
               {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}, body)


def setup_carts(users: list[str], first_product: int) -> int:
    """Gives each user a cart of CART_LINES distinct products no one else has; returns the next
    unused product number."""
    n = first_product
    for user in users:
        headers = {"X-User-Id": user, "Content-Type": "application/json"}
        request("DELETE", PORTS["cart"], f"/carts/{user}", headers=headers)
        added = 0
        while added < CART_LINES:
            body = json.dumps({"product_id": product_id(n), "quantity": 1}).encode()
            status, _, data = request("POST", PORTS["cart"], f"/carts/{user}/items", body, headers)
            n += 1
            if status < 300:
                added += 1
            elif n > first_product + 5 * CART_LINES * len(users):
                raise RuntimeError(f"cannot fill the cart of {user}: {status} {data[:200]!r}")
    return n


def probe(stack: Stack, port: int, reqs: list[Req], concurrency: int = 1) -> dict:
    reset_counters()
    result = run_requests(port, reqs, concurrency)
    total, per_route = calls_summary(read_counters())
    result["calls_per_request"] = total / len(reqs)
    result["calls"] = per_route
    return result


def mobile_product(pid: str) -> Req:
    return Req("GET", f"/m/v1/products/{pid}")


def scale_out(stack: Stack, work_dir: str, wrk_cpu: str | None, cart_token: str) -> dict:
    """The scale-out section: bff-mobile replicas over one private Redis (see the report)."""
    out: dict = {}
    redis_port = free_port()
    stack.start_redis(redis_port)
    redis_url = f"redis://{HOST}:{redis_port}/0"
    three = ["mobile-r1", "mobile-r2", "mobile-r3"]

    def fresh(names: list[str], redis: str | None, extra: dict[str, dict[str, str]] | None = None
              ) -> None:
        """Stops what runs under `names`, empties Redis, starts them again (empty caches)."""
        for name in names:
            stack.stop(name)
        redis_command(redis_port, "FLUSHALL")
        for name in names:
            stack.start_mobile_replica(name, redis, (extra or {}).get(name))
        stack.wait_healthy(names)

    def measured(names: list[str], run: object) -> tuple[object, dict[str, float], dict[str, int]]:
        """Runs `run()`; with how much the replicas' counters grew and the services' counters."""
        before = [replica_counters(n) for n in names]
        reset_counters()
        result = run()
        services = read_counters()
        grown = counters_grown(before, [replica_counters(n) for n in names])
        return result, grown, {s: services[s]["total"] for s in SERVICES}

    # -- Downstream calls per request: the same cold mix over 1 and 3 replicas ------------------
    # Each of SCALE_PRODUCTS products nobody asked for, MIX_REPEATS times, in one shuffled order
    # (the same every time); request i goes to replica i mod the number of replicas.
    log("scale-out: the cold mix over 3 replicas (no Redis, Redis) and 1")
    mix = [product_id(1 + i) for i in range(SCALE_PRODUCTS) for _ in range(MIX_REPEATS)]
    random.Random(20).shuffle(mix)
    mix_reqs = [mobile_product(pid) for pid in mix]
    out["mix"] = []
    for label, names, redis in (("3 replicas, no Redis", three, None),
                                ("3 replicas, Redis", three, redis_url),
                                ("1 replica, no Redis", three[:1], None)):
        for name in three:
            stack.stop(name)
        fresh(names, redis)
        result, grown, services = measured(
            names, lambda: run_requests([PORTS[n] for n in names], mix_reqs, MIX_CONCURRENCY))
        result.update(label=label, replicas=len(names), redis=redis is not None,
                      products=SCALE_PRODUCTS, product_calls=services["product"],
                      other_calls=services["cart"] + services["order"], counters=grown)
        out["mix"].append(result)
    for name in three:
        stack.stop(name)

    # -- L2 hit vs L1 hit: mobile product detail ---------------------------------------------
    # A and B: default settings. C: its own cache keeps an entry 1 ms (max_ttl) and never serves
    # it stale, so every request of C misses L1 and is answered from L2 (throughput of L2 hits).
    log("scale-out: L2 hit vs L1 hit")
    a, b, c = three
    fresh(three, redis_url, {c: {"BFF_DOWNSTREAM__CACHE__MAX_TTL": "1ms",
                                 "BFF_DOWNSTREAM__CACHE__STALE_WHILE_REVALIDATE": "0s"}})
    ids = [product_id(1001 + i) for i in range(SCALE_PROBES)]
    hit = out["hit"] = {}
    for key, name in (("miss", a), ("l2", b), ("l1", b)):
        result, grown, services = measured(
            [name], lambda: run_requests(PORTS[name], [mobile_product(p) for p in ids], 1))
        result.update(replica=name, product_calls=services["product"], counters=grown)
        hit[key] = result
    # Throughput: wrk cycling over L2_RUN_PRODUCTS products that A has just fetched (so Redis
    # holds them fresh), on A (its own cache: L1 hits) and on C (L2 hits), run after run.
    hit["wrk"] = []
    for run in range(RUNS):
        first = 1501 + (run % 8) * L2_RUN_PRODUCTS  # product ids stay within the 5,000 seeded
        paths = [f"/m/v1/products/{product_id(first + i)}" for i in range(L2_RUN_PRODUCTS)]
        warm = run_requests(PORTS[a], [Req("GET", p) for p in paths], MIX_CONCURRENCY)
        if warm["errors"]:
            raise RuntimeError(f"scale-out: warming on {a}: {warm['statuses']}")
        script = wrk_cycle_script(work_dir, f"scale-products-{run}", paths)
        pair = {}
        for key, name in (("l1", a), ("l2", c)):
            log(f"run {run + 1}/{RUNS}: scale-out product detail, {key.upper()} hits ({name})")
            result, grown, services = measured(
                [name], lambda: run_wrk(PORTS[name], paths[0], script, wrk_cpu, DURATION))
            result.update(product_calls=services["product"], counters=grown)
            pair[key] = result
        hit["wrk"].append(pair)

    # -- What a Redis round trip adds to a private read --------------------------------------
    # One user's cart (20 lines, products cached) read again and again on a replica without
    # Redis (r4) and on one with it (A): the private cache answers, and with Redis each read
    # first GETs the owner's shared generation.
    log("scale-out: private read (cart) without and with Redis")
    d = "mobile-r4"
    stack.start_mobile_replica(d, None)
    stack.wait_healthy([d])
    cart = Req("GET", "/m/v1/cart", {"Authorization": f"Bearer {cart_token}"})
    private = out["private"] = {"probes": {}, "wrk": []}
    for name in (d, a):
        for _ in range(3):
            status, _, body = request(cart.method, PORTS[name], cart.path, headers=cart.headers)
            if status != 200:
                raise RuntimeError(f"scale-out: cart on {name}: {status} {body[:200]!r}")
    for key, name in (("local", d), ("redis", a)):
        result, grown, services = measured(
            [name], lambda: run_requests(PORTS[name], [cart] * SCALE_PROBES, 1))
        result.update(replica=name, cart_calls=services["cart"],
                      calls=sum(services.values()), counters=grown)
        private["probes"][key] = result
    script = wrk_script(work_dir, "scale-cart", cart)
    for run in range(RUNS):
        pair = {}
        for key, name in (("local", d), ("redis", a)):
            log(f"run {run + 1}/{RUNS}: scale-out cart read, {key} ({name})")
            result, grown, services = measured(
                [name], lambda: run_wrk(PORTS[name], cart.path, script, wrk_cpu, DURATION))
            result.update(cart_calls=services["cart"], calls=sum(services.values()),
                          counters=grown)
            pair[key] = result
        private["wrk"].append(pair)
    for name in (*three, d, "redis"):
        stack.stop(name)
    return out


# Events: the reference product service publishes its changes on Redis Streams, bff-mobile
# consumes them. Changes per eviction-latency run; products of the read-mostly mix; seconds per
# mix run (a price change every CHANGE_EVERY_S during it).
EVENT_CHANGES = env_int("BENCH_EVENT_CHANGES", 120, 20)
EVENT_PATIENCE_S = 5.0  # a change not visible by then counts as never shown
EVENT_MIX_PRODUCTS = 200
EVENT_MIX_SECONDS = env_int("BENCH_EVENT_MIX_SECONDS", 15, 4)
CHANGE_EVERY_S = 1.0
HOME_PROBE_SPAN_S = 5.0 if QUICK else 12.0  # longer than page_ttl (5 s): pages expire meanwhile
EVENT_DRIVEN_TTL = {"BFF_DOWNSTREAM__CACHE__EVENT_DRIVEN_MAX_TTL": "10m"}


def metric_sums(name: str, wanted: dict[str, tuple[str, dict[str, str]]]) -> dict[str, float]:
    """For each key of `wanted` (metric, labels): the sum of that replica's matching series."""
    status, _, body = request("GET", PORTS[name + "-metrics"], "/metrics")
    if status != 200:
        raise RuntimeError(f"{name} /metrics: {status}")
    values = dict.fromkeys(wanted, 0.0)
    for line in body.decode().splitlines():
        m = METRIC_LINE.match(line)
        if not m:
            continue
        labels = dict(METRIC_LABEL.findall(m.group(2) or ""))
        for key, (metric, want) in wanted.items():
            if m.group(1) == metric and all(labels.get(k) == v for k, v in want.items()):
                values[key] += float(m.group(3))
    return values


def event_metrics(name: str) -> dict[str, float]:
    """Cache hits and misses (products, pages) and events applied, from a replica's /metrics."""
    wanted = {f"{kind}_{cache}": (f"bff_cache_{kind}_total", {"cache": cache})
              for kind in ("hits", "misses") for cache in ("products", "pages")}
    wanted["events"] = ("bff_events_total", {})
    wanted["events_applied"] = ("bff_events_total", {"outcome": "applied"})
    return metric_sums(name, wanted)


def paced_probe(port: int, req: Req, n: int, span_s: float) -> dict:
    """`n` requests one at a time, spread evenly over `span_s` (so that cached entries with a
    shorter TTL expire meanwhile); latencies in ms."""
    latencies: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    started = time.perf_counter()
    try:
        for i in range(n):
            pause = started + i * span_s / n - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = time.perf_counter()
            status, _, _ = request(req.method, port, req.path, req.body, req.headers, conn=conn)
            latencies.append((time.perf_counter() - sent) * 1000)
            errors += not 200 <= status < 400
    finally:
        conn.close()
    return {"requests": n, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies), "errors": errors}


def product_calls() -> int:
    """Requests the product service counted since its last reset (admin requests are not)."""
    return admin("product", "GET", "/__admin/stats")["total"]


def change_price(pid: str, amount_minor: int, currency: str) -> None:
    """The back office changes a product's price; answered once the event is appended."""
    admin("product", "PATCH", f"/__admin/products/{pid}",
          {"price": {"amount_minor": amount_minor, "currency": currency}})


def events(stack: Stack, work_dir: str, wrk_cpu: str | None) -> dict:
    """The events section: bff-mobile with change events (Redis) and without (see the report)."""
    out: dict = {}
    redis_port = free_port()
    stack.start_redis(redis_port)
    redis_url = f"redis://{HOST}:{redis_port}/0"
    # The product service again, now publishing its changes (same seed, same latency).
    stack.stop("product")
    stack.start_service("product", redis_url)
    stack.wait_healthy(["product"])
    on, off = "mobile-r1", "mobile-r2"
    stack.start_mobile_replica(on, redis_url, EVENT_DRIVEN_TTL)
    stack.start_mobile_replica(off, None)
    stack.wait_healthy([on, off])
    time.sleep(1.5)  # the consumer's first XREAD (events_block 1s) has started
    status, _, body = request("GET", PORTS["product"], "/categories")
    categories = json.loads(body)
    if isinstance(categories, dict):
        categories = next(v for v in categories.values() if isinstance(v, list))
    category = categories[0]["id"]
    out["category"] = category

    def seeded_price(pid: str) -> tuple[int, str]:
        status, _, body = request("GET", PORTS["product"], f"/products/{pid}")
        if status != 200:
            raise RuntimeError(f"events: product {pid}: {status} {body[:200]!r}")
        price = json.loads(body)["price"]
        return price["amount_minor"], price["currency"]

    # -- Time from XADD to eviction: change a price while a poller reads the product screen ---
    # The poller GETs the product again and again (one keep-alive connection) and notes when
    # each GET was sent and what price it showed: the eviction happened after the last GET sent
    # that still showed the old price and before the first that showed the new one.
    log(f"events: {EVENT_CHANGES} price changes, each polled until visible")
    pid = product_id(4901)
    base, currency = seeded_price(pid)
    path = f"/m/v1/products/{pid}"
    for _ in range(3):
        request("GET", PORTS[on], path)
    seen: list[tuple[float, float, object]] = []  # (sent, answered, price shown)
    polling = threading.Event()
    quit_polling = threading.Event()

    def poller() -> None:
        conn = http.client.HTTPConnection(HOST, PORTS[on], timeout=10)
        try:
            while not quit_polling.is_set():
                if not polling.wait(0.05):
                    continue
                sent = time.perf_counter()
                status, _, body = request("GET", PORTS[on], path, conn=conn)
                price = json.loads(body).get("price") if status == 200 else None
                seen.append((sent, time.perf_counter(), price))
        finally:
            conn.close()

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    evicted: list[float] = []  # PATCH sent → first GET sent that showed the new price
    after_answer: list[float] = []  # PATCH answered → the same GET sent (< 0: before the answer)
    stale_after: list[float] = []  # PATCH answered → last GET sent that showed the old price
    shown: list[float] = []  # PATCH answered → that first fresh GET answered (with the refetch)
    never = 0
    before = event_metrics(on)
    try:
        for i in range(EVENT_CHANGES):
            price = base - 1 - i % 2  # below the seeded price (any list price stays above it)
            seen.clear()
            polling.set()
            time.sleep(0.005)  # a few stale GETs first
            sent = time.perf_counter()
            change_price(pid, price, currency)
            answered = time.perf_counter()
            while not any(p == price for _, _, p in list(seen)):
                if time.perf_counter() - answered > EVENT_PATIENCE_S:
                    break
                time.sleep(0.001)
            polling.clear()
            time.sleep(0.02)  # the poller's GET in flight ends
            rows = list(seen)
            fresh = next((r for r in rows if r[2] == price), None)
            if fresh is None:
                never += 1
                continue
            stale = [r for r in rows if r[0] < fresh[0] and r[2] != price]
            evicted.append((fresh[0] - sent) * 1000)
            after_answer.append((fresh[0] - answered) * 1000)
            if stale:
                stale_after.append((stale[-1][0] - answered) * 1000)
            shown.append((fresh[1] - answered) * 1000)
    finally:
        quit_polling.set()
        polling.set()
        thread.join()
    grown = {k: v - before[k] for k, v in event_metrics(on).items()}
    out["latency"] = {
        "changes": EVENT_CHANGES, "never": never, "product": pid,
        "evicted_p50": percentile(evicted, 50), "evicted_p99": percentile(evicted, 99),
        "evicted_max": max(evicted) if evicted else float("nan"),
        "after_answer_p50": percentile(after_answer, 50),
        "after_answer_p99": percentile(after_answer, 99),
        "before_answer": sum(1 for x in after_answer if x <= 0),
        "stale_after_p50": percentile(stale_after, 50),
        "stale_after_max": max(stale_after) if stale_after else float("nan"),
        "shown_p50": percentile(shown, 50), "shown_p99": percentile(shown, 99),
        "counters": grown,
    }

    # -- Home screen and a category's list page, events on and off ----------------------------
    log("events: home screen and list page, events on and off")
    home = Req("GET", "/m/v1/home")
    page = Req("GET", f"/m/v1/products?category={urllib.parse.quote(category)}")
    script = wrk_script(work_dir, "events-page", page)
    cmp = out["compare"] = {}
    for key, name in (("off", off), ("on", on)):
        for _ in range(3):
            request("GET", PORTS[name], home.path)
            request("GET", PORTS[name], page.path)
        before = event_metrics(name)
        reset_counters()
        home_result = paced_probe(PORTS[name], home, SCALE_PROBES, HOME_PROBE_SPAN_S)
        home_result["calls"] = product_calls()
        home_result["product_calls"] = home_result["calls"] / SCALE_PROBES
        runs = []
        for run in range(RUNS):
            log(f"run {run + 1}/{RUNS}: events {key}, list page of category {category}")
            reset_counters()
            result = run_wrk(PORTS[name], page.path, script, wrk_cpu, DURATION)
            result["calls"] = product_calls()
            result["product_calls"] = result["calls"] / result["requests"]
            runs.append(result)
        cmp[key] = {"home": home_result, "page": runs,
                    "counters": {k: v - before[k] for k, v in event_metrics(name).items()}}

    # -- Read-mostly mix with a price change every second --------------------------------------
    ids = [product_id(4001 + i) for i in range(EVENT_MIX_PRODUCTS)]
    prices = {p: seeded_price(p) for p in ids}
    paths = []
    for i, p in enumerate(ids):
        paths.append(f"/m/v1/products/{p}")
        if i % 10 == 9:  # a list page every tenth request, categories in turn, and the home screen
            c = categories[(i // 10) % len(categories)]["id"]
            paths.append(f"/m/v1/products?category={urllib.parse.quote(c)}")
            paths.append("/m/v1/home")
    script = wrk_cycle_script(work_dir, "events-mix", paths)
    mix = out["mix"] = {}
    rng = random.Random(21)
    for key, name in (("off", off), ("on", on)):
        log(f"events: read-mostly mix, a price change every {CHANGE_EVERY_S:.0f} s, events {key}")
        warm = run_requests(PORTS[name], [Req("GET", p) for p in paths], MIX_CONCURRENCY)
        if warm["errors"]:
            raise RuntimeError(f"events: warming {name}: {warm['statuses']}")
        stop = threading.Event()
        changes = [0]
        failed: list[str] = []

        def changer() -> None:
            while not stop.wait(CHANGE_EVERY_S):
                p = rng.choice(ids)
                amount, cur = prices[p]
                changes[0] += 1
                try:
                    change_price(p, amount - 1 - changes[0] % 2, cur)
                except (OSError, RuntimeError) as error:
                    failed.append(str(error))

        before = event_metrics(name)
        reset_counters()
        thread = threading.Thread(target=changer, daemon=True)
        thread.start()
        try:
            result = run_wrk(PORTS[name], paths[0], script, wrk_cpu, EVENT_MIX_SECONDS)
        finally:
            stop.set()
            thread.join()
        result["calls"] = product_calls()
        result["product_calls"] = result["calls"] / result["requests"]
        result["changes"] = changes[0]
        result["failed_changes"] = failed
        result["counters"] = {k: v - before[k] for k, v in event_metrics(name).items()}
        mix[key] = result
    out["mix_paths"] = len(paths)
    for name in (on, off, "redis"):
        stack.stop(name)
    return out


# Live updates: GraphQL subscriptions of bff-web over WebSocket, driven by `bench-live` (a Rust
# client holding the sockets; see bench-live/src/main.rs). Sockets held idle; products they follow
# (socket i follows the i mod LIVE_PRODUCTS-th); seconds the gateway's CPU is read while they idle;
# subscribers of the one product changed; changes timed (one every LIVE_CHANGE_EVERY_S).
ONLY = os.environ.get("BENCH_ONLY", "")
LIVE_SOCKETS = env_int("BENCH_LIVE_SOCKETS", 10000, 1000)
LIVE_PRODUCTS = 100
LIVE_IDLE_SECONDS = env_int("BENCH_LIVE_IDLE_SECONDS", 15, 3)
LIVE_FANOUT = env_int("BENCH_LIVE_FANOUT", 1000, 200)
LIVE_CHANGES = env_int("BENCH_LIVE_CHANGES", 10, 3)
LIVE_CHANGE_EVERY_S = 1.0
LIVE_PATIENCE_S = 5.0  # after the last change, how long the last pushes may take
LIVE_CATALOG_STREAM = "bff:events:catalog"  # the reference services' default prefix
LIVE_TARGET_KIB = 16.0  # memory per idle connection beyond the idle process (issue #25)
LIVE_TARGET_P99_MS = 100.0  # a change to every subscriber (issue #25)
LIVE_MAX_SOCKETS = max(LIVE_SOCKETS, LIVE_FANOUT)
LIVE_LIMITS = {
    # One client address holds every socket: the stream limits are raised past what the run
    # opens, and the connection limit past them (streams stay below connections, as the gateway
    # wants, so that ordinary requests always find one).
    "BFF_GATEWAY__SUBSCRIPTIONS__MAX_STREAMS_PER_ADDRESS": str(LIVE_MAX_SOCKETS + 256),
    "BFF_GATEWAY__SUBSCRIPTIONS__MAX_STREAMS": str(LIVE_MAX_SOCKETS + 256),
    "BFF_SERVER__MAX_CONNECTIONS": str(max(10000, LIVE_MAX_SOCKETS + 512)),
}


class LiveClient:
    """A running `bench-live`: JSON lines on its stdout, commands on its stdin (registered with
    the stack, so that it is stopped, by PID, whatever happens)."""

    def __init__(self, stack: Stack, name: str, sockets: int, products: list[str],
                 subscribe: bool = True):
        self.stack = stack
        self.name = name
        log_path = os.path.join(stack.work_dir, f"{name}.log")
        err = open(log_path, "ab")
        argv = [os.path.join(stack.bin_dir, "bench-live"),
                "--url", f"ws://{HOST}:{PORTS['web-live']}/graphql",
                "--sockets", str(sockets), "--products", ",".join(products)]
        if not subscribe:
            argv.append("--no-subscribe")
        self.popen = subprocess.Popen(stack.pinned(stack.other_cpu, argv), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=err)
        err.close()
        stack.procs[name] = Proc(name, self.popen, log_path)
        self.buffer = b""

    def event(self, want: str, timeout: float) -> dict:
        """The next line whose `event` is `want` (earlier lines of other events are skipped)."""
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                value = json.loads(line)
                if value.get("event") == want:
                    return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.name}: no {want!r} line within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited; see "
                                       f"{self.stack.procs[self.name].log_path}")
                self.buffer += chunk

    def command(self, text: str) -> None:
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def stats(self) -> dict:
        self.command("stats")
        return self.event("stats", 30)

    def close(self) -> dict:
        """Closes every socket; the client's final report (counters and every `next`)."""
        self.command("close")
        closed = self.event("closed", 90)
        self.popen.stdin.close()
        self.popen.wait(timeout=30)
        self.stack.procs.pop(self.name, None)
        return closed


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_sched_s(pid: int) -> tuple[float, float]:
    """(time on a CPU, time runnable but waiting for one) of all of a process's threads so far,
    from /proc/PID/task/*/schedstat (ns); (nan, nan) where the kernel does not keep them. The
    wait is what other processes on the same CPU (builds, on a shared machine) cost it."""
    run = wait = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    fields = f.read().split()
            except FileNotFoundError:
                continue  # a thread that just ended
            run += int(fields[0])
            wait += int(fields[1])
    except OSError:
        return NAN, NAN
    return run / 1e9, wait / 1e9


def proc_rss_kb(pid: int, key: str = "VmRSS") -> int:
    """A line of /proc/PID/status in kB (VmRSS: resident now; VmHWM: the peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def live_gauges() -> dict[str, float]:
    """The live gauges of the section's gateway, from its /metrics."""
    return metric_sums("web-live", {
        "subscribers": ("bff_live_subscribers", {}),
        "topics": ("bff_live_topics", {}),
        "consumer_up": ("bff_events_consumer_up", {"stream": "catalog"}),
        "refusals": ("bff_live_refusals_total", {}),
        "signals": ("bff_live_signals_total", {}),
        "polls": ("bff_live_polls_total", {}),
        "connections": ("bff_http_connections_open", {}),
    })


def wait_gauge(key: str, want: float, timeout: float) -> dict[str, float]:
    """Reads the gateway's live gauges until `key` is `want`; the last reading either way."""
    deadline = time.monotonic() + timeout
    while True:
        gauges = live_gauges()
        if gauges[key] == want or time.monotonic() > deadline:
            return gauges
        time.sleep(0.1)


def xadd_ms_of_last_entry(redis_port: int, pid: str) -> int:
    """The time (ms on Redis' clock, this machine's) of the last entry of the catalog stream: the
    millisecond part of its id, which `XADD … *` took from the clock when it appended it."""
    reply = redis_command(redis_port, "XREVRANGE", LIVE_CATALOG_STREAM, "+", "-", "COUNT", "1")
    m = re.search(rb"\$\d+\r\n(\d+)-\d+\r\n", reply)
    if not m or pid.encode() not in reply:
        raise RuntimeError(f"live: the catalog stream's last entry is not {pid}'s: {reply[:300]!r}")
    return int(m.group(1))


def live(stack: Stack) -> dict:
    """The live-updates section: idle WebSocket subscriptions (memory, CPU) and the fan-out of one
    change to many subscribers (time from the XADD to each `next`, product-service calls)."""
    out: dict = {"limits": LIVE_LIMITS}
    redis_port = free_port()
    stack.start_redis(redis_port)
    redis_url = f"redis://{HOST}:{redis_port}/0"
    # The product service again, now publishing its changes (same seed, same latency).
    stack.stop("product")
    stack.start_service("product", redis_url)
    stack.wait_healthy(["product"])
    name = "web-live"
    idle_ids = [product_id(4801 + i) for i in range(LIVE_PRODUCTS)]
    fan_id = product_id(4951)

    def fresh_gateway() -> int:
        """(Re)starts the section's bff-web and warms it up: every product read once through a
        query (so cached), ten subscriptions opened and closed; its PID."""
        stack.stop(name)
        env = stack.gateway_env("bff-web")
        env["BFF_LISTEN_ADDR"] = f"{HOST}:{PORTS[name]}"
        env["BFF_SERVER__METRICS_LISTEN_ADDR"] = f"{HOST}:{PORTS[name + '-metrics']}"
        env["BFF_REDIS_URL"] = redis_url
        env.update(LIVE_LIMITS)
        stack.start(name, [os.path.join(stack.bin_dir, "bff-web")], env, stack.gateway_cpu)
        stack.wait_healthy([name])
        if wait_gauge("consumer_up", 1, 15)["consumer_up"] != 1:
            raise RuntimeError("live: bff-web's catalog consumer did not come up")
        for pid in [*idle_ids, fan_id]:
            req = web_product(pid)
            status, _, body = request(req.method, PORTS[name], req.path, req.body, req.headers)
            if status != 200:
                raise RuntimeError(f"live: product {pid} through bff-web: {status} {body[:200]!r}")
        warm = LiveClient(stack, "live-warm", 10, idle_ids[:10])
        warm.event("subscribed", 60)
        warm.close()
        wait_gauge("subscribers", 0, 10)
        time.sleep(2)
        return stack.procs[name].pid

    # -- Idle: N sockets subscribed, then nothing but keep-alives --------------------------------
    log(f"live: {LIVE_SOCKETS} idle WebSocket subscriptions over {LIVE_PRODUCTS} products")
    idle = out["idle"] = {"requested": LIVE_SOCKETS, "products": LIVE_PRODUCTS,
                          "seconds": LIVE_IDLE_SECONDS}
    # First the same sockets without a subscription (what a connection costs by itself); each
    # round on a fresh gateway, so that neither starts from memory the other left to the allocator.
    gateway = fresh_gateway()
    bare = idle["bare"] = {"rss_before_kb": proc_rss_kb(gateway)}
    client = LiveClient(stack, "live-bare", LIVE_SOCKETS, idle_ids, subscribe=False)
    opened = client.event("subscribed", 180)
    bare.update(opened=opened["subscribed"], failed=opened["failed"])
    time.sleep(2)
    bare["rss_after_kb"] = proc_rss_kb(gateway)
    closed = client.close()
    bare.update(lost=closed["lost"], unexpected=closed["unexpected"])
    bare["connections_after_close"] = wait_gauge("connections", 0, 15)["connections"]
    time.sleep(2)
    bare["rss_closed_kb"] = proc_rss_kb(gateway)
    # Then with one subscription each.
    gateway = fresh_gateway()
    idle["rss_before_kb"] = proc_rss_kb(gateway)
    client = LiveClient(stack, "live-idle", LIVE_SOCKETS, idle_ids)
    subscribed = client.event("subscribed", 180)
    idle.update(subscribed=subscribed["subscribed"], failed=subscribed["failed"],
                failures=subscribed["failures"], open_s=subscribed["seconds"])
    gauges = wait_gauge("subscribers", subscribed["subscribed"], 60)
    idle["gateway_subscribers"] = gauges["subscribers"]
    idle["gateway_topics"] = gauges["topics"]
    time.sleep(2)  # whatever the subscriptions' start left to do
    idle["rss_after_kb"] = proc_rss_kb(gateway)
    before = client.stats()
    cpu0, client_cpu0, t0 = proc_cpu_s(gateway), proc_cpu_s(client.popen.pid), time.monotonic()
    sched0 = proc_sched_s(gateway)
    time.sleep(LIVE_IDLE_SECONDS)
    cpu1, client_cpu1, t1 = proc_cpu_s(gateway), proc_cpu_s(client.popen.pid), time.monotonic()
    sched1 = proc_sched_s(gateway)
    after = client.stats()
    idle["run_s"], idle["wait_s"] = sched1[0] - sched0[0], sched1[1] - sched0[1]
    idle["rss_idle_end_kb"] = proc_rss_kb(gateway)
    idle["cpu_s"] = cpu1 - cpu0
    idle["client_cpu_s"] = client_cpu1 - client_cpu0
    idle["wall_s"] = t1 - t0
    idle["pings"] = after["pings"] - before["pings"]
    idle["open_at_end"] = after["open"]
    closed = client.close()
    idle.update(lost=closed["lost"], unexpected=closed["unexpected"], samples=closed["samples"],
                nexts=closed["nexts"], close_s=closed["close_seconds"])
    idle["gateway_subscribers_after_close"] = wait_gauge("subscribers", 0, 15)["subscribers"]
    idle["connections_after_close"] = wait_gauge("connections", 0, 15)["connections"]
    time.sleep(2)
    idle["rss_closed_kb"] = proc_rss_kb(gateway)
    idle["rss_peak_kb"] = proc_rss_kb(gateway, "VmHWM")

    # -- Fan-out: M subscribers of one product, its price changed once a second ---------------
    log(f"live: fan-out of {LIVE_CHANGES} price changes to {LIVE_FANOUT} subscribers")
    status, _, body = request("GET", PORTS["product"], f"/products/{fan_id}")
    price = json.loads(body)["price"]
    base, currency = price["amount_minor"], price["currency"]
    fan = out["fanout"] = {"subscribers": LIVE_FANOUT, "product": fan_id, "changes": LIVE_CHANGES}
    client = LiveClient(stack, "live-fanout", LIVE_FANOUT, [fan_id])
    subscribed = client.event("subscribed", 120)
    fan.update(subscribed=subscribed["subscribed"], failed=subscribed["failed"],
               failures=subscribed["failures"])
    wait_gauge("subscribers", subscribed["subscribed"], 30)
    # A first change, not timed: once every socket has its `next`, every subscription follows.
    change_price(fan_id, base - 1, currency)
    deadline = time.monotonic() + 10
    while client.stats()["nexts"] < subscribed["subscribed"] and time.monotonic() < deadline:
        time.sleep(0.05)
    fan["primed"] = client.stats()["nexts"]
    time.sleep(LIVE_CHANGE_EVERY_S)
    signals0 = live_gauges()
    reset_counters()
    changes = []
    cpu0, sched0 = proc_cpu_s(gateway), proc_sched_s(gateway)
    started = time.monotonic()
    for i in range(LIVE_CHANGES):
        pause = started + i * LIVE_CHANGE_EVERY_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        amount = base - 2 - i  # a new price each time, below the seeded one (and any list price)
        change_price(fan_id, amount, currency)
        changes.append({"amount": amount, "xadd_ms": xadd_ms_of_last_entry(redis_port, fan_id)})
    expected = fan["primed"] + subscribed["subscribed"] * LIVE_CHANGES
    deadline = time.monotonic() + LIVE_PATIENCE_S
    while client.stats()["nexts"] < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # any duplicate push would show up by now
    cpu1, sched1 = proc_cpu_s(gateway), proc_sched_s(gateway)
    fan["window_s"] = time.monotonic() - started
    fan["cpu_s"] = cpu1 - cpu0
    fan["run_s"], fan["wait_s"] = sched1[0] - sched0[0], sched1[1] - sched0[1]
    fan["calls"] = product_calls()
    signals1 = live_gauges()
    fan["signals"] = signals1["signals"] - signals0["signals"]
    fan["polls"] = signals1["polls"] - signals0["polls"]
    closed = client.close()
    fan.update(lost=closed["lost"], unexpected=closed["unexpected"], samples=closed["samples"])
    by_amount = {c["amount"]: c for c in changes}
    for c in changes:
        c["latencies"] = []
        c["sockets"] = set()
    extra = 0
    for socket_no, amount, arrived_us in closed["frames"]:
        c = by_amount.get(amount)
        if c is None:
            continue  # the untimed first change
        if socket_no in c["sockets"]:
            extra += 1
            continue
        c["sockets"].add(socket_no)
        c["latencies"].append(arrived_us / 1000 - c["xadd_ms"])
    everything = [x for c in changes for x in c["latencies"]]
    fan["per_change"] = [{"received": len(c["sockets"]), "first": min(c["latencies"], default=NAN),
                          "p50": percentile(c["latencies"], 50),
                          "last": max(c["latencies"], default=NAN)} for c in changes]
    fan["deliveries"] = len(everything)
    fan["expected"] = subscribed["subscribed"] * LIVE_CHANGES
    fan["duplicates"] = extra
    fan["p50"] = percentile(everything, 50)
    fan["p99"] = percentile(everything, 99)
    fan["max"] = max(everything, default=NAN)
    fan["first_p50"] = percentile([c["first"] for c in fan["per_change"]], 50)
    fan["last_p50"] = percentile([c["last"] for c in fan["per_change"]], 50)
    for key in ("live-bare", "live-idle", "live-fanout", "live-warm"):
        stack.stop(key)
    for key in (name, "redis"):
        stack.stop(key)
    return out


NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# Redis cost per request kind (the capacity model of docs/SCALING.md, issue #27)

REDIS_REQUESTS = env_int("BENCH_REDIS_REQUESTS", 3000, 300)
REDIS_EVENTS = env_int("BENCH_REDIS_EVENTS", 300, 40)
REDIS_SUBSCRIBERS = env_int("BENCH_REDIS_SUBSCRIBERS", 100, 20)
REDIS_IDLE_SECONDS = env_int("BENCH_REDIS_IDLE_SECONDS", 5, 2)
REDIS_SAMPLE = 100  # requests of each kind sent again under MONITOR (who ran each command)
REDIS_SAMPLE_EVENTS = 10
REDIS_CONCURRENCY = 16
REDIS_EVENT_EVERY_S = 0.04
REDIS_SETTLE_S = 1.0
REDIS_COMMAND_TIMEOUT = "1s"  # shared.command_timeout of the section's replicas (default 50ms)  # after the last request: the change-event consumers catch up
REDIS_CART_USERS = 20
REDIS_MISS_FIRST = 2001  # products of the miss and L2 rows: p-02001…, never asked for before
REDIS_SAMPLE_FIRST = 4501  # products of their MONITOR samples: p-04501…
REDIS_INFO = ("INFO", "commandstats", "stats", "cpu")
REDIS_BEGIN = "<!-- redis:begin -->"
REDIS_END = "<!-- redis:end -->"
REDIS_MONITOR_LINE = re.compile(r'^\+[\d.]+ \[\d+ ([^\]]+)\] (.*)$')
REDIS_MONITOR_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
# Commands that commandstats names with their subcommand (`xinfo|stream`), as MONITOR does not.
REDIS_CONTAINERS = ("xinfo", "xgroup", "script", "config", "client", "memory", "object",
                    "function", "cluster", "command", "acl", "latency", "slowlog", "pubsub")


def redis_reply(port: int, *words: str) -> tuple[bytes, int, int]:
    """One command with a bulk-string reply (INFO): the whole reply, the bytes of the request
    and the bytes of the reply as they crossed the socket."""
    payload = (f"*{len(words)}\r\n"
               + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)).encode()
    with socket.create_connection((HOST, port), timeout=5) as conn:
        conn.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise RuntimeError(f"redis closed the connection during {words[0]}")
            data += chunk
        head, rest = data.split(b"\r\n", 1)
        if not head.startswith(b"$"):
            raise RuntimeError(f"redis {' '.join(words)}: {data[:200]!r}")
        size = int(head[1:])
        while len(rest) < size + 2:
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise RuntimeError(f"redis closed the connection during {words[0]}")
            rest += chunk
    return rest[:size], len(payload), len(head) + 2 + size + 2


@dataclass
class RedisSnapshot:
    """`INFO commandstats stats cpu` at one moment."""
    calls: dict[str, int]
    usec: dict[str, int]
    net_in: int
    net_out: int
    cpu_s: float
    at: float
    sent: int  # bytes of the INFO request that took this snapshot
    received: int  # bytes of its reply


def redis_snapshot(port: int) -> RedisSnapshot:
    body, sent, received = redis_reply(port, *REDIS_INFO)
    at = time.monotonic()
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    fields: dict[str, str] = {}
    for line in body.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            kv = dict(x.split("=", 1) for x in rest.split(","))
            calls[name] = int(kv["calls"])
            usec[name] = int(kv["usec"])
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return RedisSnapshot(calls, usec, int(fields["total_net_input_bytes"]),
                         int(fields["total_net_output_bytes"]),
                         float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"]), at,
                         sent, received)


def redis_delta(a: RedisSnapshot, b: RedisSnapshot, own_info_usec: float) -> dict:
    """What Redis did between two snapshots, without the harness's own INFO: `b` counts the INFO
    call that took `a` (commandstats are updated after a command ran) and `a`'s reply (output),
    and its own request (input, read before it ran)."""
    calls = {k: b.calls.get(k, 0) - a.calls.get(k, 0) for k in b.calls}
    usec: dict[str, float] = {k: b.usec.get(k, 0) - a.usec.get(k, 0) for k in b.usec}
    calls["info"] = calls.get("info", 0) - 1
    usec["info"] = max(0.0, usec.get("info", 0) - own_info_usec)
    return {"calls": {k: v for k, v in calls.items() if v > 0},
            "usec": {k: usec.get(k, 0) for k, v in calls.items() if v > 0},
            "net_in": b.net_in - a.net_in - b.sent, "net_out": b.net_out - a.net_out - a.received,
            "cpu_s": b.cpu_s - a.cpu_s, "seconds": b.at - a.at}


def redis_minus_idle(d: dict, idle: dict | None) -> dict:
    """`d` less what the same processes do idle in as long (the idle window's rate), per command."""
    if not idle:
        return d
    f = d["seconds"] / idle["seconds"]
    calls = {k: max(0.0, v - f * idle["calls"].get(k, 0)) for k, v in d["calls"].items()}
    usec = {k: max(0.0, v - f * idle["usec"].get(k, 0)) for k, v in d["usec"].items()}
    return {"calls": {k: v for k, v in calls.items() if v > 1e-9},
            "usec": {k: usec[k] for k, v in calls.items() if v > 1e-9},
            "net_in": max(0.0, d["net_in"] - f * idle["net_in"]),
            "net_out": max(0.0, d["net_out"] - f * idle["net_out"]),
            "cpu_s": max(0.0, d["cpu_s"] - f * idle["cpu_s"]), "seconds": d["seconds"],
            "raw": d, "idle_factor": f}


def redis_key_pattern(key: str) -> str:
    key = re.sub(r"[0-9a-f]{16,}", "<h>", key)
    return re.sub(r"\d+", "N", key)


class RedisMonitor:
    """`MONITOR` on a connection of its own, read by a thread: counts the commands Redis runs by
    name, by whether a client sent it or a Lua script ran it, and by key pattern."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.top: dict[str, int] = {}
        self.inner: dict[str, int] = {}
        self.keys: dict[str, dict[str, int]] = {}
        self.started = time.monotonic()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()
        if not self.ready.wait(5):
            raise RuntimeError("redis MONITOR did not answer")

    def read(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                if line == b"+OK":
                    self.ready.set()
                else:
                    self.count(line.decode(errors="replace"))

    def count(self, line: str) -> None:
        m = REDIS_MONITOR_LINE.match(line)
        if not m:
            return
        args = REDIS_MONITOR_ARG.findall(m.group(2))
        if not args:
            return
        name = args[0].lower()
        sub = 0
        if name in REDIS_CONTAINERS and len(args) > 1:
            name, sub = f"{name}|{args[1].lower()}", 1
        if name in ("info", "monitor") and m.group(1) != "lua":
            return  # the harness's own
        target = self.inner if m.group(1) == "lua" else self.top
        target[name] = target.get(name, 0) + 1
        key = ""
        if name in ("evalsha", "eval") and len(args) > 3 and args[2] != "0":
            key = args[3]
        elif name in ("xread", "xreadgroup"):
            upper = [a.upper() for a in args]
            if "STREAMS" in upper and upper.index("STREAMS") + 1 < len(args):
                key = args[upper.index("STREAMS") + 1]
        elif name.startswith(("xinfo|", "xgroup|", "object|", "memory|")) and len(args) > 2:
            key = args[2]
        elif not sub and name not in ("info", "ping", "time", "multi", "exec") and len(args) > 1:
            key = args[1]
        if key and m.group(1) != "lua":
            pattern = redis_key_pattern(key)
            per = self.keys.setdefault(name, {})
            per[pattern] = per.get(pattern, 0) + 1

    def stop(self) -> dict:
        time.sleep(0.3)  # the last lines
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        return {"top": self.top, "inner": self.inner, "keys": self.keys,
                "seconds": time.monotonic() - self.started - 0.3}


def redis_sample_minus(sample: dict, background: dict | None) -> dict:
    """A MONITOR sample less what the same processes run idle in as long (scaled from an idle
    MONITOR window), so that background commands do not show up among a request's."""
    if not background:
        return sample
    f = sample["seconds"] / background["seconds"] if background["seconds"] > 0 else 0.0
    out = {"seconds": sample["seconds"]}
    for part in ("top", "inner"):
        out[part] = {k: max(0.0, v - f * background[part].get(k, 0))
                     for k, v in sample[part].items()}
    out["keys"] = {}
    for name, per in sample["keys"].items():
        bg = background["keys"].get(name, {})
        kept = {p: max(0.0, c - f * bg.get(p, 0)) for p, c in per.items()}
        out["keys"][name] = {p: c for p, c in kept.items() if c > 0} or per
    return out


def redis_row(key: str, label: str, gateway: str, n: int, d: dict, sample: dict,
              round_trips: float, outcome: dict | None = None) -> dict:
    """One row: per request (or per event), the commands Redis ran (by who ran them: a client or a
    script, in the proportions of the MONITOR sample), its time and the bytes."""
    top: dict[str, float] = {}
    inner: dict[str, float] = {}
    usec_top = 0.0
    for name, calls in d["calls"].items():
        t, i = sample["top"].get(name, 0), sample["inner"].get(name, 0)
        share = i / (t + i) if t + i else 0.0
        inner[name] = calls * share
        top[name] = calls - inner[name]
        usec_top += d["usec"].get(name, 0) * (1 - share)
    # Each command's calls split over its key patterns in the sample's proportions.
    split = []
    for name, calls in top.items():
        per = sample["keys"].get(name) or {"": 1}
        total = sum(per.values())
        for pattern, count in per.items():
            split.append((name, calls * count / total / n, pattern))
    return {
        "key": key, "label": label, "gateway": gateway, "requests": n,
        "sent": sum(top.values()) / n, "executed": sum(d["calls"].values()) / n,
        "top": sorted((x for x in split if x[1] >= 0.005), key=lambda x: -x[1]),
        "inner": sorted(((k, v / n) for k, v in inner.items() if v / n >= 0.005),
                        key=lambda x: -x[1]),
        "usec": usec_top / n, "cpu_us": d["cpu_s"] * 1e6 / n,
        "net_in": d["net_in"] / n, "net_out": d["net_out"] / n, "round_trips": round_trips / n,
        "outcome": outcome or {}, "delta": d, "sample": sample,
    }


def redis_keyspace(port: int) -> list[dict]:
    """Every key in Redis grouped by pattern: how many, `MEMORY USAGE` (bytes, with Redis'
    overhead), the median time to live, and for streams their entries (`XLEN`)."""
    cli = ["redis-cli", "-h", HOST, "-p", str(port)]
    keys = subprocess.run([*cli, "--scan"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.split()
    if not keys:
        return []
    script = "".join(f"MEMORY USAGE {k} SAMPLES 0\nPTTL {k}\nTYPE {k}\n" for k in keys)
    replies = subprocess.run(cli, input=script, capture_output=True, text=True, check=True,
                             timeout=120).stdout.split("\n")
    groups: dict[str, dict] = {}
    for i, key in enumerate(keys):
        size, ttl, kind = replies[3 * i:3 * i + 3]
        g = groups.setdefault(redis_key_pattern(key), {"keys": 0, "bytes": 0, "ttls": [],
                                                      "type": kind, "entries": 0})
        g["keys"] += 1
        g["bytes"] += int(size or 0)
        if int(ttl or -1) >= 0:
            g["ttls"].append(int(ttl) / 1000)
        if kind == "stream":
            g["entries"] += int(subprocess.run([*cli, "XLEN", key], capture_output=True,
                                               text=True, check=True).stdout.strip() or 0)
    return sorted(({"pattern": k, "keys": g["keys"], "bytes": g["bytes"], "type": g["type"],
                    "entries": g["entries"],
                    "ttl_s": statistics.median(g["ttls"]) if g["ttls"] else None}
                   for k, g in groups.items()), key=lambda g: -g["bytes"])


def redis_costs(stack: Stack) -> dict:
    """The Redis section: for each kind of request, what it costs Redis (commands, time, bytes),
    from INFO deltas over thousands of requests on a private redis-server."""
    out: dict = {"rows": [], "idle": [], "requests": REDIS_REQUESTS, "events": REDIS_EVENTS,
                 "subscribers": REDIS_SUBSCRIBERS, "idle_seconds": REDIS_IDLE_SECONDS,
                 "sample": REDIS_SAMPLE, "concurrency": REDIS_CONCURRENCY,
                 "command_timeout": REDIS_COMMAND_TIMEOUT}
    port = free_port()
    stack.start_redis(port)
    url = f"redis://{HOST}:{port}/0"
    out["redis_version"] = redis_reply(port, "INFO", "server")[0].decode().split(
        "redis_version:", 1)[1].split("\r\n", 1)[0]
    # The services again, publishing their changes there (as in a deployment with events).
    for service in SERVICES:
        stack.stop(service)
        stack.start_service(service, url)
    stack.wait_healthy(list(SERVICES))
    for service in SERVICES:
        set_latency(service, "0ms")
    # The cost of the harness's own INFO, taken off every delta.
    snaps = [redis_snapshot(port) for _ in range(4)]
    own = min(snaps[i + 1].usec.get("info", 0) - snaps[i].usec.get("info", 0) for i in range(3))
    out["own_info_usec"] = own

    # Carts: CART_LINES lines for the cart-read users, one line for each checkout user.
    cart_users = [user_id(601 + i) for i in range(REDIS_CART_USERS)]
    setup_carts(cart_users, 1001)
    # Two pools: checkouts on one replica, then on one of two (both consume the events).
    checkout_users = [user_id(2001 + i) for i in range(2 * (REDIS_SAMPLE + REDIS_REQUESTS))]
    lines = [Req("POST", f"/carts/{u}/items",
                 {"X-User-Id": u, "Content-Type": "application/json"},
                 json.dumps({"product_id": product_id(2 + 2 * (i % 2)), "quantity": 1}).encode())
             for i, u in enumerate(checkout_users)]
    made = run_requests(PORTS["cart"], lines, REDIS_CONCURRENCY)
    if made["errors"]:
        raise RuntimeError(f"redis: one-line carts: {made['statuses']}")
    tokens = {u: hs256_token(stack.secret, u) for u in [*cart_users, *checkout_users]}
    partner_auth = {"Authorization": f"Bearer {stack.partner_key}"}

    def start(name: str, gateway: str, extra: dict[str, str] | None = None) -> None:
        env = stack.gateway_env(gateway)
        env["BFF_LISTEN_ADDR"] = f"{HOST}:{PORTS[name]}"
        env["BFF_SERVER__METRICS_LISTEN_ADDR"] = f"{HOST}:{PORTS[name + '-metrics']}"
        env["BFF_REDIS_URL"] = url
        # A shared 2-CPU machine can stall Redis past the default 50 ms now and then, and a
        # replica then falls back to in-process behaviour for `retry_after` (1 s): fewer
        # commands, not the cost this section is after. Any fallback left is reported.
        env["BFF_SHARED__COMMAND_TIMEOUT"] = REDIS_COMMAND_TIMEOUT
        # As `./scripts/dev --replicas` and the events section run them: catalog entries fresh
        # while the events vouch for them (so a product's L1 and L2 entries outlive the rows).
        env.update(EVENT_DRIVEN_TTL)
        env.update(extra or {})
        stack.start(name, [os.path.join(stack.bin_dir, gateway)], env, stack.gateway_cpu)
        stack.wait_healthy([name])
        deadline = time.monotonic() + 15
        while metric_sums(name, {"up": ("bff_events_consumer_up", {})})["up"] < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis: {name}'s change-event consumers did not come up")
            time.sleep(0.1)

    def round_trips(names: list[str]) -> dict[str, float]:
        """The replicas' own Redis counters, summed."""
        total = {"commands": 0.0, "errors": 0.0, "fallbacks": 0.0}
        for n in names:
            got = metric_sums(n, {"commands": ("bff_redis_commands_total", {}),
                                  "errors": ("bff_redis_errors_total", {}),
                                  "fallbacks": ("bff_redis_fallback_total", {})})
            for k in total:
                total[k] += got[k]
        return total

    def idle(label: str, names: list[str]) -> dict:
        """The processes `names` doing nothing: their background, a rate to subtract (and, in a
        second window, which commands on which keys it is, to take off the MONITOR samples)."""
        time.sleep(1)
        a = redis_snapshot(port)
        time.sleep(REDIS_IDLE_SECONDS)
        b = redis_snapshot(port)
        d = redis_delta(a, b, own)
        monitor = RedisMonitor(port)
        time.sleep(REDIS_IDLE_SECONDS)
        d["monitor"] = monitor.stop()
        out["idle"].append({"label": label, "delta": d})
        return d

    def send(target: str, reqs: list[Req]) -> dict:
        result = run_requests(PORTS[target], reqs, REDIS_CONCURRENCY)
        if result["errors"]:
            raise RuntimeError(f"redis: {target} answered errors: {result['statuses']}")
        return result

    def row(key: str, label: str, gateway: str, names: list[str], background: dict | None,
            sample_run, run, n: int):
        """`sample_run()` under MONITOR (who runs what), then `run()` between two snapshots; the
        row. Without `background`, a function that makes the row from the idle background
        measured afterwards (when the row cannot wait for it)."""
        log(f"redis: {label}")
        monitor = RedisMonitor(port)
        try:
            sample_run()
        finally:
            sampled = monitor.stop()
        time.sleep(REDIS_SETTLE_S)
        rt0 = round_trips(names)
        cpu0 = sum(proc_cpu_s(stack.procs[x].pid) for x in names)
        a = redis_snapshot(port)
        outcome = run()
        time.sleep(REDIS_SETTLE_S)
        b = redis_snapshot(port)
        cpu1 = sum(proc_cpu_s(stack.procs[x].pid) for x in names)
        rt1 = round_trips(names)
        raw = redis_delta(a, b, own)

        def finish(bg: dict) -> dict:
            sample = redis_sample_minus(sampled, bg.get("monitor"))
            d = redis_minus_idle(raw, bg)
            r = redis_row(key, label, gateway, n, d, sample, rt1["commands"] - rt0["commands"],
                          outcome)
            r["gateway_cpu_us"] = (cpu1 - cpu0) * 1e6 / n
            r["redis_errors"] = rt1["errors"] - rt0["errors"]
            r["redis_fallbacks"] = rt1["fallbacks"] - rt0["fallbacks"]
            if r["redis_errors"] or r["redis_fallbacks"]:
                log(f"redis: {label}: {r['redis_errors']:.0f} Redis errors, "
                    f"{r['redis_fallbacks']:.0f} fallbacks: the counts are not the full cost")
            out["rows"].append(r)
            return r

        return finish if background is None else finish(background)

    try:
        # -- Redis and the services alone: Redis' own housekeeping, the floor of every idle row --
        idle("no gateway (Redis' own housekeeping)", [])
        # -- bff-mobile, replica A: L1 hit, miss, cart read, checkout ---------------------------
        a, b = "mobile-r1", "mobile-r2"
        start(a, "bff-mobile")
        for _ in range(3):
            send(a, [Req("GET", f"/m/v1/products/{product_id(2)}")])
        cart_reqs = {u: Req("GET", "/m/v1/cart", {"Authorization": f"Bearer {tokens[u]}"})
                     for u in cart_users}
        send(a, list(cart_reqs.values()))
        bg = idle("bff-mobile", [a])
        hit = Req("GET", f"/m/v1/products/{product_id(2)}")
        row("product-l1", "product, L1 hit (in the replica's memory)", "bff-mobile", [a], bg,
            lambda: send(a, [hit] * REDIS_SAMPLE),
            lambda: send(a, [hit] * REDIS_REQUESTS), REDIS_REQUESTS)
        cart_cycle = [cart_reqs[cart_users[i % len(cart_users)]] for i in range(REDIS_REQUESTS)]
        row("mobile-cart", "cart read, signed in (20 lines, products in L1)", "bff-mobile", [a],
            bg, lambda: send(a, cart_cycle[:REDIS_SAMPLE]), lambda: send(a, cart_cycle),
            REDIS_REQUESTS)

        def checkouts(users: list[str]) -> dict:
            reqs = [Req("POST", "/m/v1/checkout",
                        {"Authorization": f"Bearer {tokens[u]}", "Idempotency-Key": f"bench-{u}"})
                    for u in users]
            return send(a, reqs)

        pool = REDIS_SAMPLE + REDIS_REQUESTS
        row("checkout-1", "checkout (an order placed with an Idempotency-Key)", "bff-mobile",
            [a], bg, lambda: checkouts(checkout_users[:REDIS_SAMPLE]),
            lambda: checkouts(checkout_users[REDIS_SAMPLE:pool]), REDIS_REQUESTS)
        # Last on A alone, so that B reads the products from L2 while they are fresh there (an
        # L2 entry is taken over only within its ordinary freshness, 30 s for the seeded ones).
        misses = min(REDIS_REQUESTS, REDIS_SAMPLE_FIRST - REDIS_MISS_FIRST)
        miss_ids = [product_id(REDIS_MISS_FIRST + i) for i in range(misses)]
        sample_ids = [product_id(REDIS_SAMPLE_FIRST + i) for i in range(REDIS_SAMPLE)]
        row("product-miss", "product, miss of L1 and L2 (fetched, then shared)", "bff-mobile",
            [a], bg, lambda: send(a, [mobile_product(p) for p in sample_ids]),
            lambda: send(a, [mobile_product(p) for p in miss_ids]), misses)

        # -- bff-mobile, replica B next to A: the products A fetched, from L2; then a checkout
        # on A with B consuming its events too ------------------------------------------------
        start(b, "bff-mobile")
        from_l2 = row("product-l2", "product, L1 miss answered from L2 (another replica "
                      "fetched it)", "bff-mobile", [b], None,
                      lambda: send(b, [mobile_product(p) for p in sample_ids]),
                      lambda: send(b, [mobile_product(p) for p in miss_ids]), misses)
        bg = idle("bff-mobile + bff-mobile", [a, b])
        from_l2(bg)
        row("checkout-2", "checkout, plus a second replica consuming its events", "bff-mobile",
            [a, b], bg, lambda: checkouts(checkout_users[pool:pool + REDIS_SAMPLE]),
            lambda: checkouts(checkout_users[pool + REDIS_SAMPLE:]), REDIS_REQUESTS)
        stack.stop(a)
        stack.stop(b)

        # -- bff-partner: a request under quota -------------------------------------------------
        p = "partner-redis"
        start(p, "bff-partner")
        partner = Req("GET", f"/v2/products/{product_id(2)}", dict(partner_auth))
        send(p, [partner] * 3)
        bg = idle("bff-partner", [p])
        row("partner", "partner request under quota (product, L1 hit)", "bff-partner", [p], bg,
            lambda: send(p, [partner] * REDIS_SAMPLE),
            lambda: send(p, [partner] * REDIS_REQUESTS), REDIS_REQUESTS)
        stack.stop(p)

        # -- bff-web: cart read, then one change event fanned out to subscribers ---------------
        w, w2 = "web-live", "web-live-b"
        start(w, "bff-web")
        web_carts = {u: web_cart(tokens[u]) for u in cart_users}
        send(w, list(web_carts.values()))
        fan_id = product_id(4951)
        send(w, [web_product(fan_id)])
        bg = idle("bff-web", [w])
        web_cycle = [web_carts[cart_users[i % len(cart_users)]] for i in range(REDIS_REQUESTS)]
        row("web-cart", "cart read, signed in (20 lines, products in L1)", "bff-web", [w], bg,
            lambda: send(w, web_cycle[:REDIS_SAMPLE]), lambda: send(w, web_cycle),
            REDIS_REQUESTS)

        status, _, body = request("GET", PORTS["product"], f"/products/{fan_id}")
        price = json.loads(body)["price"]
        base, currency = price["amount_minor"], price["currency"]
        client = LiveClient(stack, "redis-live", REDIS_SUBSCRIBERS, [fan_id])
        subscribed = client.event("subscribed", 60)["subscribed"]
        if subscribed != REDIS_SUBSCRIBERS:
            raise RuntimeError(f"redis: {subscribed} of {REDIS_SUBSCRIBERS} subscriptions")
        wait_gauge("subscribers", subscribed, 30)
        changed = [0]

        def changes(n: int) -> dict:
            """`n` price changes, one every REDIS_EVENT_EVERY_S; waits for every `next`."""
            want = client.stats()["nexts"] + n * subscribed
            started = time.monotonic()
            for i in range(n):
                pause = started + i * REDIS_EVENT_EVERY_S - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                changed[0] += 1
                change_price(fan_id, base - 1 - changed[0] % 2, currency)
            deadline = time.monotonic() + 10
            while client.stats()["nexts"] < want and time.monotonic() < deadline:
                time.sleep(0.05)
            got = client.stats()["nexts"] - (want - n * subscribed)
            return {"changes": n, "nexts": got, "expected": n * subscribed}

        changes(1)  # every subscription follows changes
        for label, names in ((f"product change event, {subscribed} subscribers on the replica",
                              [w]),
                             (f"product change event, {subscribed} subscribers, plus a second "
                              "replica consuming it", [w, w2])):
            if len(names) == 2:
                start(w2, "bff-web")
                send(w2, [web_product(fan_id)])  # its copy, which the events evict
            bg = idle(" + ".join(["bff-web"] * len(names)) + f" ({subscribed} idle subscribers)",
                      names)
            row(f"event-{len(names)}", label, "bff-web", names, bg,
                lambda: changes(REDIS_SAMPLE_EVENTS), lambda: changes(REDIS_EVENTS),
                REDIS_EVENTS)
        client.close()
        stack.stop(w2)
        stack.stop(w)
        # What all that left in Redis, by key pattern (what grows with what: docs/SCALING.md).
        out["keyspace"] = redis_keyspace(port)
        out["used_memory"] = int(redis_reply(port, "INFO", "memory")[0].decode().split(
            "used_memory:", 1)[1].split("\r\n", 1)[0])
    finally:
        for name in ("redis-live", "mobile-r1", "mobile-r2", "partner-redis", "web-live",
                     "web-live-b"):
            stack.stop(name)
        stack.stop("redis")
        # The services as the other sections have them: no events, the run's latency.
        for service in SERVICES:
            stack.stop(service)
            stack.start_service(service)
        stack.wait_healthy(list(SERVICES))
    return out



def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--out", default=os.environ.get("BENCH_OUT", "docs/BENCHMARKS.md"))
    parser.add_argument("--command", default="./scripts/bench")
    args = parser.parse_args()

    if ONLY not in ("", "live", "redis"):
        log(f"BENCH_ONLY={ONLY}: the sections that run alone are `live` and `redis`")
        return 2
    if not ONLY and not shutil.which("wrk"):
        log("wrk is not installed (scripts/bench installs it)")
        return 1
    if not shutil.which("redis-server"):
        log("redis-server is not installed (scripts/bench installs it: scripts/ensure-redis-server)")
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    gateway_cpu = str(cpus[0]) if len(cpus) >= 2 else None
    other_cpu = ",".join(str(c) for c in cpus[1:]) if len(cpus) >= 2 else None
    if other_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in other_cpu.split(",")})
    # Every socket is a descriptor, on both sides: the soft limit up to the hard one, inherited
    # by every process started here (the gateways raise theirs too).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < LIVE_MAX_SOCKETS + 1024:
        log(f"the open-file limit ({hard}) is too low for {LIVE_SOCKETS} sockets: the live "
            "section will report failed subscriptions; raise `ulimit -Hn`")

    started = time.monotonic()
    work_dir = tempfile.mkdtemp(prefix="bff-bench-")
    if ONLY == "live":
        return only_live(args, Stack(args.bin_dir, work_dir, gateway_cpu, other_cpu), started)
    if ONLY == "redis":
        return only_redis(args, Stack(args.bin_dir, work_dir, gateway_cpu, other_cpu), started)
    stack = Stack(args.bin_dir, work_dir, gateway_cpu, other_cpu)
    results: dict = {"scenarios": {}, "probes": {}, "stampede": {}, "slow": {}}

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        log(f"logs and scripts in {work_dir}")
        for service in SERVICES:
            stack.start_service(service)
        stack.wait_healthy(list(SERVICES))

        # Set-up at no latency, then the fixed latency of the run.
        for service in SERVICES:
            set_latency(service, "0ms")
        n_cart_users = max(PROBES, 2)
        cart_users = [user_id(101 + i) for i in range(n_cart_users + 1)]
        setup_carts(cart_users, 1001)
        for service in SERVICES:
            set_latency(service, LATENCY)

        for gateway in (*GATEWAYS, "bff-partner-quiet"):
            stack.start_gateway(gateway)
        stack.wait_healthy([*GATEWAYS, "bff-partner-quiet"])

        tokens = {u: hs256_token(stack.secret, u) for u in cart_users}
        home_users = [user_id(201 + i) for i in range(max(PROBES, RESTARTS) + 1)]
        tokens.update({u: hs256_token(stack.secret, u) for u in home_users})
        bench_cart_user = cart_users[-1]
        partner_auth = {"Authorization": f"Bearer {stack.partner_key}"}

        # -- Cold and warm cart of 20 lines (bff-web), one request at a time -------------------
        # Cold: each user's cart holds 20 products nobody asked for yet, so the catalog cache has
        # none of them. Warm: the same users again once their private cart entries expired
        # (private_cache.ttl 2s): the products are now cached, the cart is not.
        # -- What the services alone take: the floor under every gateway latency -------------
        log("downstream floor")
        floor_user = cart_users[-2]
        floor_ids = ",".join(product_id(4501 + i) for i in range(CART_LINES))
        results["probes"]["floor-cart"] = probe(stack, PORTS["cart"], [
            Req("GET", f"/carts/{floor_user}", {"X-User-Id": floor_user})] * PROBES)
        results["probes"]["floor-batch"] = probe(stack, PORTS["product"], [
            Req("GET", f"/products?ids={floor_ids}")] * PROBES)

        log("cart of 20 lines: cold, then warm products")
        probe_users = cart_users[:PROBES]
        results["probes"]["web-cart-cold"] = probe(
            stack, PORTS["bff-web"], [web_cart(tokens[u]) for u in probe_users])
        time.sleep(2.5)
        results["probes"]["web-cart-warm"] = probe(
            stack, PORTS["bff-web"], [web_cart(tokens[u]) for u in probe_users])

        # -- Stampede: N concurrent requests for one product nobody asked for yet -------------
        stampede_reqs = {
            "bff-web": web_product(product_id(3001)),
            "bff-mobile": Req("GET", f"/m/v1/products/{product_id(3002)}"),
            "bff-partner": Req("GET", f"/v2/products/{product_id(3003)}", dict(partner_auth)),
        }
        for gateway, req in stampede_reqs.items():
            log(f"stampede of {STAMPEDE} on {gateway}")
            reset_counters()
            outcome = asyncio.run(stampede(PORTS[gateway], req, STAMPEDE))
            total, per_route = calls_summary(read_counters())
            outcome["calls"] = total
            outcome["per_route"] = per_route
            results["stampede"][gateway] = outcome
            stack.sample_rss(gateway)

        # -- Slow product service: 10x latency, every request a cache miss --------------------
        log(f"slow product service ({SLOW_LATENCY})")
        set_latency("product", SLOW_LATENCY)
        try:
            bases = {"bff-web": 3101, "bff-mobile": 3501, "bff-partner": 3901}
            for gateway, base in bases.items():
                ids = [product_id(base + i) for i in range(min(SLOW_REQUESTS, 399))]
                if gateway == "bff-web":
                    reqs = [web_product(pid) for pid in ids]
                elif gateway == "bff-mobile":
                    reqs = [Req("GET", f"/m/v1/products/{pid}") for pid in ids]
                else:
                    reqs = [Req("GET", f"/v2/products/{pid}", dict(partner_auth)) for pid in ids]
                results["slow"][gateway] = probe(stack, PORTS[gateway], reqs, concurrency=16)
        finally:
            set_latency("product", LATENCY)

        # -- Steady load, gateway and baseline back to back ----------------------------------
        scenarios = [
            Scenario("web-product", "Web: product detail query, warm cache", "bff-web",
                     web_product(product_id(2)), True,
                     "POST /graphql, one product with price, availability, rating, image"),
            Scenario("web-product-signed-in", "Web: product detail query, signed in, warm cache",
                     "bff-web", signed_in(web_product(product_id(2)), tokens[bench_cart_user]),
                     True,
                     "the same query with a user's HS256 bearer token: verified (from the "
                     "verified-token cache), then the same public answer"),
            Scenario("web-cart", "Web: cart of 20 lines with products, warm", "bff-web",
                     web_cart(tokens[bench_cart_user]), False,
                     "one user's cart; its products are cached and so is the cart itself for "
                     "`private_cache.ttl` (2s), so most requests make no downstream call"),
            Scenario("mobile-home", "Mobile: home screen, signed in, warm", "bff-mobile",
                     Req("GET", "/m/v1/home",
                         {"Authorization": f"Bearer {tokens[home_users[-1]]}"}), False,
                     "featured products (a catalog page: not cached, one product-service call), "
                     "categories (catalog cache), cart badge and latest order (private cache, 2s)"),
            Scenario("mobile-product", "Mobile: product detail, warm", "bff-mobile",
                     Req("GET", f"/m/v1/products/{product_id(2)}"), True,
                     "GET /m/v1/products/p-00002"),
            Scenario("mobile-products", "Mobile: product list page", "bff-mobile",
                     Req("GET", "/m/v1/products?limit=20"), False,
                     "GET /m/v1/products?limit=20. Catalog pages are never cached (by design, "
                     "docs/resilience.md), so every request makes one product-service call"),
            Scenario("partner-product", "Partner: v2 product get, warm", "bff-partner",
                     Req("GET", f"/v2/products/{product_id(2)}", dict(partner_auth)), True,
                     "GET /v2/products/p-00002 with an API key"),
            Scenario("partner-products", "Partner: v2 product list", "bff-partner",
                     Req("GET", "/v2/products?limit=20", dict(partner_auth)), False,
                     "GET /v2/products?limit=20 with an API key. Catalog pages are never cached, "
                     "so every request makes one product-service call"),
            Scenario("partner-product-quiet", "Partner: v2 product get, warm, logging at warn",
                     "bff-partner-quiet",
                     Req("GET", f"/v2/products/{product_id(2)}", dict(partner_auth)), True,
                     "the same as the v2 product get, on a second bff-partner with "
                     "`telemetry.filter = warn` (no log line per request): not a target, it shows "
                     "what per-request logging costs"),
        ]
        answers_dir = os.path.join(work_dir, "answers")
        os.makedirs(answers_dir)
        for s in scenarios:
            for _ in range(3):  # warm the caches; keep the last answer for the baseline
                status, headers, body = request(s.req.method, PORTS[s.gateway], s.req.path,
                                                s.req.body, s.req.headers)
            if status != 200:
                raise RuntimeError(f"{s.key}: {status} {body[:300]!r}")
            with open(os.path.join(answers_dir, f"{s.key}.body"), "wb") as f:
                f.write(body)
            with open(os.path.join(answers_dir, f"{s.key}.type"), "w") as f:
                f.write(headers.get("content-type", "application/json"))
        stack.start_baseline(answers_dir)
        stack.wait_healthy(["baseline"])

        runs: dict[str, list[dict]] = {s.key: [] for s in scenarios}
        for run in range(RUNS):
            for s in scenarios:
                log(f"run {run + 1}/{RUNS}: {s.key}")
                script = wrk_script(work_dir, s.key, s.req)
                reset_counters()
                gw = run_wrk(PORTS[s.gateway], s.req.path, script, other_cpu, DURATION)
                total, per_route = calls_summary(read_counters())
                gw["calls_per_request"] = total / gw["requests"]
                gw["calls"] = per_route
                stack.sample_rss(s.gateway)
                base = run_wrk(PORTS["baseline"], f"/{s.key}", script, other_cpu, DURATION)
                runs[s.key].append({"gateway": gw, "baseline": base,
                                    "ratio": gw["rps"] / base["rps"] if base["rps"] else 0.0})
        for s in scenarios:
            r = runs[s.key]
            med = lambda pick: statistics.median(pick(x) for x in r)  # noqa: E731
            results["scenarios"][s.key] = {
                "title": s.title, "gateway": s.gateway, "note": s.note, "cache_hit": s.cache_hit,
                "rps": med(lambda x: x["gateway"]["rps"]),
                "p50": med(lambda x: x["gateway"]["p50"]),
                "p99": med(lambda x: x["gateway"]["p99"]),
                "errors": sum(x["gateway"]["errors"] for x in r),
                "requests": sum(x["gateway"]["requests"] for x in r),
                "calls_per_request": med(lambda x: x["gateway"]["calls_per_request"]),
                "baseline_rps": med(lambda x: x["baseline"]["rps"]),
                "baseline_p50": med(lambda x: x["baseline"]["p50"]),
                "baseline_p99": med(lambda x: x["baseline"]["p99"]),
                "baseline_errors": sum(x["baseline"]["errors"] for x in r),
                "ratio": med(lambda x: x["ratio"]),
                "response_bytes": os.path.getsize(os.path.join(answers_dir, f"{s.key}.body")),
                "runs": r,
            }
        for gateway in GATEWAYS:
            stack.sample_rss(gateway)
        stack.sample_rss("baseline")

        # -- Home screen: cold (fresh gateway) and warm catalog -------------------------------
        # Cold: bff-mobile restarted, so its catalog cache is empty; one signed-in home request
        # per start. Warm: the catalog cached, each request by another user (private cache cold).
        log(f"home screen: {RESTARTS} cold starts")
        cold: list[dict] = []
        for i in range(RESTARTS):
            stack.sample_rss("bff-mobile")
            stack.stop("bff-mobile")
            stack.start_gateway("bff-mobile")
            stack.wait_healthy(["bff-mobile"])
            user = home_users[i]
            cold.append(probe(stack, PORTS["bff-mobile"], [
                Req("GET", "/m/v1/home", {"Authorization": f"Bearer {tokens[user]}"})]))
        latencies = [c["p50"] for c in cold]
        results["probes"]["mobile-home-cold"] = {
            "requests": len(cold), "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "max": max(latencies),
            "errors": sum(c["errors"] for c in cold),
            "calls_per_request": statistics.mean(c["calls_per_request"] for c in cold),
            "calls": cold[-1]["calls"],
        }
        log("home screen: warm catalog")
        results["probes"]["mobile-home-warm"] = probe(stack, PORTS["bff-mobile"], [
            Req("GET", "/m/v1/home", {"Authorization": f"Bearer {tokens[u]}"})
            for u in home_users[:PROBES]])
        stack.sample_rss("bff-mobile")
        # -- One process (bff-all) vs three: memory, and products shared across clients -------
        # The same product detail asked for once through each client's gateway: three gateways
        # cache it three times (three product-service calls), bff-all once.
        log("one process (bff-all) vs three gateways")
        # Fresh processes on both sides, so that both do the same work from the same start.
        for gateway in GATEWAYS:
            stack.stop(gateway)
            stack.start_gateway(gateway)
        stack.start_all()
        stack.wait_healthy([*GATEWAYS, "bff-all"])
        n = max(PROBES, 10)

        def across_clients(ports: tuple[int, int, int], first: int) -> dict:
            ids = [product_id(first + i) for i in range(n)]
            reset_counters()
            for pid in ids:
                for port, req in zip(ports, (
                        web_product(pid), Req("GET", f"/m/v1/products/{pid}"),
                        Req("GET", f"/v2/products/{pid}", dict(partner_auth)))):
                    status, _, body = request(req.method, port, req.path, req.body, req.headers)
                    if status != 200:
                        raise RuntimeError(f"{port} {req.path}: {status} {body[:200]!r}")
            total, per_route = calls_summary(read_counters())
            return {"products": n, "requests": 3 * n, "calls": total, "per_route": per_route,
                    "hit_ratio": 1 - total / (3 * n)}

        one = results["one_process"] = {}
        one["three"] = across_clients(
            (PORTS["bff-web"], PORTS["bff-mobile"], PORTS["bff-partner"]), 4601)
        one["all"] = across_clients(
            (PORTS["bff-all"], PORTS["bff-all-mobile"], PORTS["bff-all-partner"]), 4701)
        # The same steady product-detail load on both sides, then each process's peak memory.
        for key, three_port, all_port in (
                ("web-product", "bff-web", "bff-all"),
                ("mobile-product", "bff-mobile", "bff-all-mobile"),
                ("partner-product", "bff-partner", "bff-all-partner")):
            sc = next(x for x in scenarios if x.key == key)
            for port in (three_port, all_port):
                run_wrk(PORTS[port], sc.req.path, wrk_script(work_dir, f"one-{key}", sc.req),
                        other_cpu, DURATION)
        one["rss_all_kb"] = stack.sample_rss("bff-all")
        one["rss_three_kb"] = {g: stack.sample_rss(g) for g in GATEWAYS}
        stack.stop("bff-all")

        # -- Scale-out: bff-mobile replicas sharing one Redis ---------------------------------
        results["scale_out"] = scale_out(stack, work_dir, other_cpu, tokens[bench_cart_user])

        # -- Events: change events from the product service, bff-mobile with and without -----
        results["events"] = events(stack, work_dir, other_cpu)

        # -- Live updates: WebSocket subscriptions of bff-web, idle and fanned out -------------
        results["live"] = live(stack)

        # -- Redis cost per request kind: commands, time and bytes (docs/SCALING.md) ----------
        results["redis"] = redis_costs(stack)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        stack.stop_all()
        return 130
    finally:
        stack.stop_all()

    results["elapsed_s"] = time.monotonic() - started
    results["peak_rss_kb"] = stack.peak_rss_kb
    results["pinning"] = {"gateway_cpu": gateway_cpu, "other_cpu": other_cpu}
    with open(os.path.join(work_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    write_report(args.out, args.command, results)
    log(f"wrote {args.out} ({results['elapsed_s']:.0f}s of benchmarks; raw data in {work_dir})")
    return 0


def only_live(args: argparse.Namespace, stack: Stack, started: float) -> int:
    """BENCH_ONLY=live: the reference services and the live-updates section, nothing else; only
    that section of the report (and its Method line) is rewritten."""

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        log(f"logs in {stack.work_dir}")
        for service in SERVICES:
            stack.start_service(service)
        stack.wait_healthy(list(SERVICES))
        results = {"live": live(stack)}
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        stack.stop_all()
        return 130
    finally:
        stack.stop_all()
    results["elapsed_s"] = time.monotonic() - started
    results["pinning"] = {"gateway_cpu": stack.gateway_cpu, "other_cpu": stack.other_cpu}
    with open(os.path.join(stack.work_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    update_live(args.out, args.command, results)
    log(f"updated the live-updates section of {args.out} ({results['elapsed_s']:.0f}s; raw data "
        f"in {stack.work_dir})")
    return 0


# ---------------------------------------------------------------------------------------------
# The report


def machine() -> str:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem} memory, {platform.system()} {platform.release()}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        # The report itself does not count: a run rewrites the previous run's report.
        report = os.environ.get("BENCH_OUT", "docs/BENCHMARKS.md")
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", f":(exclude){report}"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" plus uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ms(value: float) -> str:
    return f"{value:.2f} ms" if value == value else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


CRITERION_BEGIN = "<!-- criterion:begin -->"
CRITERION_END = "<!-- criterion:end -->"


NOTES_BEGIN = "<!-- notes:begin -->"
NOTES_END = "<!-- notes:end -->"


def kept_section(path: str, begin: str, end_marker: str) -> str:
    """A hand-maintained section of the previous report, kept across runs."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    if begin in text and end_marker in text:
        start = text.index(begin)
        end = text.index(end_marker) + len(end_marker)
        return text[start:end]
    return ""


def kept_criterion_section(path: str) -> str:
    return kept_section(path, CRITERION_BEGIN, CRITERION_END)


def write_report(path: str, command: str, r: dict) -> None:
    sc = r["scenarios"]
    pr = r["probes"]
    rss = r["peak_rss_kb"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add("Generated by `scripts/bench` — do not edit by hand, except the Findings section (written")
    add("by hand about a run, kept across runs: re-read it against new numbers) and the")
    add("micro-benchmark section (rewritten by `scripts/bench micro`). The live-updates and Redis")
    add("cost sections say which run they come from (`BENCH_ONLY=live` and `BENCH_ONLY=redis` rewrite")
    add("each alone). What each number means and")
    add("how it is measured is under [Method](#method).")
    add("")
    add(f"- **Command:** `{command}`")
    add(f"- **Commit:** {commit()}")
    add(f"- **Machine:** {machine()}")
    add(f"- **Date:** {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; benchmarks took "
        f"{r['elapsed_s']:.0f} s (without the build)")
    add(f"- **Settings:** reference-service latency {LATENCY} per call; wrk: 1 thread, "
        f"{CONNECTIONS} connections, {DURATION} s per run, median of {RUNS} run(s); "
        f"probes of {PROBES} requests; {RESTARTS} cold starts; stampede of {STAMPEDE}"
        + (" (BENCH_QUICK=1: a smoke run, too short for stable numbers)" if QUICK else ""))
    pin = r["pinning"]
    if pin["gateway_cpu"] is not None:
        add(f"- **CPU pinning (taskset):** gateway and baseline on CPU {pin['gateway_cpu']}; wrk, "
            f"the reference services and the harness on CPU {pin['other_cpu']}")
    else:
        add("- **CPU pinning:** none (a single CPU)")
    add("")

    # Targets
    add("## Targets")
    add("")
    add("| target | measured | |")
    add("|---|---|---|")
    for key, floor, what in (("mobile-product", 0.7, "cache-hit REST"),
                             ("partner-product", 0.7, "cache-hit REST"),
                             ("web-product", 0.5, "web response cache, anonymous"),
                             ("web-product-signed-in", 0.25, "web response cache, signed in")):
        s = sc[key]
        add(f"| {what} ≥ {floor}× baseline throughput: {s['title']} | {s['ratio']:.2f}× "
            f"({s['rps']:.0f} vs {s['baseline_rps']:.0f} req/s) | {verdict(s['ratio'] >= floor)} |")
    s = sc["web-cart"]
    add(f"| web cart of 20 lines, warm, signed in ≥ 2× the {CART_RPS_BEFORE} req/s measured before "
        f"the fast path (#23) | {s['rps']:.0f} req/s ({s['rps'] / CART_RPS_BEFORE:.2f}×) | "
        f"{verdict(s['rps'] >= 2 * CART_RPS_BEFORE)} |")
    for key in ("mobile-products", "partner-products"):
        s = sc[key]
        add(f"| (not a cache hit: pages are never cached) {s['title']} | {s['ratio']:.2f}× "
            f"({s['rps']:.0f} vs {s['baseline_rps']:.0f} req/s) | n/a |")
    home = pr["mobile-home-cold"]
    add(f"| home screen p50 < 12 ms (fan-out, cold catalog) | {ms(home['p50'])} | "
        f"{verdict(home['p50'] < 12)} |")
    homew = pr["mobile-home-warm"]
    add(f"| home screen p50 < 12 ms (catalog warm, cart and orders called) | {ms(homew['p50'])} | "
        f"{verdict(homew['p50'] < 12)} |")
    cc = pr["web-cart-cold"]
    add(f"| cart of 20 lines p50 < 22 ms (cold: two dependent hops) | {ms(cc['p50'])} | "
        f"{verdict(cc['p50'] < 22)} |")
    add(f"| cart of 20 lines → 2 downstream calls (cold) | {cc['calls_per_request']:.2f} | "
        f"{verdict(abs(cc['calls_per_request'] - 2) < 1e-9)} |")
    cw = pr["web-cart-warm"]
    add(f"| cart of 20 lines → 1 downstream call (products warm) | {cw['calls_per_request']:.2f} | "
        f"{verdict(abs(cw['calls_per_request'] - 1) < 1e-9)} |")
    for gateway, st in r["stampede"].items():
        add(f"| stampede ({STAMPEDE} concurrent, one cold product) → 1 call: {gateway} | "
            f"{st['calls']} | {verdict(st['calls'] == 1)} |")
    for gateway, st in r["slow"].items():
        add(f"| slow product service: p99 within the {DEADLINE_MS / 1000:.0f} s deadline: {gateway} "
            f"| {ms(st['p99'])} | {verdict(st['p99'] < DEADLINE_MS)} |")
    for gateway in GATEWAYS:
        kb = rss.get(gateway, 0)
        add(f"| peak RSS < 150 MB: {gateway} | {kb / 1024:.1f} MiB | {verdict(kb / 1024 < 150)} |")
    add("")

    # Steady load
    add("## Steady load (wrk), gateway vs. bare axum baseline")
    add("")
    add("Each row: median of the runs; the baseline (`bench-baseline`) answers the same bytes on "
        "the same CPU right after the gateway's run. Ratio = gateway ÷ baseline throughput, median "
        "of the per-run ratios.")
    add("")
    for key, s in sc.items():
        add(f"### {s['title']}")
        add("")
        add(f"{s['note']}. Response: {s['response_bytes']} bytes. "
            + ("Pure cache hit." if s["cache_hit"] else "Not a pure cache hit (see note)."))
        add("")
        add("| | req/s | p50 | p99 | errors | downstream calls / request | peak RSS |")
        add("|---|---|---|---|---|---|---|")
        add(f"| {s['gateway']} | {s['rps']:.0f} | {ms(s['p50'])} | {ms(s['p99'])} | {s['errors']} "
            f"/ {s['requests']} | {s['calls_per_request']:.4f} | "
            f"{rss.get(s['gateway'], 0) / 1024:.1f} MiB |")
        add(f"| baseline | {s['baseline_rps']:.0f} | {ms(s['baseline_p50'])} | "
            f"{ms(s['baseline_p99'])} | {s['baseline_errors']} | – | "
            f"{rss.get('baseline', 0) / 1024:.1f} MiB |")
        add(f"| **ratio** | **{s['ratio']:.2f}×** | | | | | |")
        add("")
        per_run = ", ".join(f"{x['gateway']['rps']:.0f}/{x['baseline']['rps']:.0f}"
                            for x in s["runs"])
        add(f"Per run (gateway/baseline req/s): {per_run}.")
        add("")

    # Probes
    add("## Latency and downstream calls, one request at a time")
    add("")
    add("| scenario | requests | p50 | p99 | max | errors | downstream calls / request | calls (last) |")
    add("|---|---|---|---|---|---|---|---|")
    titles = {
        "web-cart-cold": "Web: cart of 20 lines, cold (products never requested before)",
        "web-cart-warm": "Web: cart of 20 lines, products warm (cart not cached)",
        "mobile-home-cold": "Mobile: home, cold (fresh gateway, first request)",
        "mobile-home-warm": "Mobile: home, catalog warm (a different user each request)",
    }
    titles["floor-cart"] = "Floor: the cart service alone (GET /carts/{user}), no gateway"
    titles["floor-batch"] = "Floor: the product service alone (batch of 20 ids), no gateway"
    for key in ("floor-cart", "floor-batch", "web-cart-cold", "web-cart-warm",
                "mobile-home-cold", "mobile-home-warm"):
        p = pr[key]
        calls = "; ".join(f"{k} ×{v}" for k, v in sorted(p["calls"].items()))
        if key != "mobile-home-cold" and calls:
            calls = "(all) " + calls
        add(f"| {titles[key]} | {p['requests']} | {ms(p['p50'])} | {ms(p['p99'])} | "
            f"{ms(p['max'])} | {p['errors']} | {p['calls_per_request']:.2f} | {calls} |")
    add("")

    floor = pr["floor-cart"]["p50"] + pr["floor-batch"]["p50"]
    add(f"Two dependent hops cost {ms(floor)} at the services alone (p50 of the cart plus p50 of "
        f"the batch, measured by the same client), so the cold cart's gateway overhead is about "
        f"{ms(pr['web-cart-cold']['p50'] - floor)}.")
    add("")
    add("## Stampede")
    add("")
    add(f"{STAMPEDE} connections opened first, then one request on each sent at once, for one "
        "product no one had asked for.")
    add("")
    add("| gateway | connections | statuses | p50 | p99 | product-service calls |")
    add("|---|---|---|---|---|---|")
    for gateway, st in r["stampede"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(st["statuses"].items()))
        routes = "; ".join(f"{k} ×{v}" for k, v in sorted(st["per_route"].items()))
        add(f"| {gateway} | {st['opened']} | {statuses} | {ms(st['p50'])} | {ms(st['p99'])} | "
            f"{st['calls']} ({routes}) |")
    add("")

    add("## Slow product service")
    add("")
    add(f"Product service latency {SLOW_LATENCY} (10× {LATENCY}); every request for a product not "
        "yet cached, 16 concurrent. Configured deadline (`downstream.deadline`): "
        f"{DEADLINE_MS / 1000:.0f} s.")
    add("")
    add("| gateway | requests | req/s | p50 | p99 | max | errors | downstream calls / request |")
    add("|---|---|---|---|---|---|---|---|")
    for gateway, st in r["slow"].items():
        add(f"| {gateway} | {st['requests']} | {st['rps']:.0f} | {ms(st['p50'])} | "
            f"{ms(st['p99'])} | {ms(st['max'])} | {st['errors']} | {st['calls_per_request']:.2f} |")
    add("")

    one = r.get("one_process")
    if one:
        add("## One process (bff-all) vs three gateways")
        add("")
        add(f"Each of {one['three']['products']} products nobody had asked for, requested once "
            "through each client's gateway (web product query, mobile product detail, partner "
            "v2 product get): with three gateway processes, and with `bff-all` (the three in one "
            "process over one `Downstream`), both freshly started. Peak memory (VmHWM): after "
            "that and the same steady product-detail load (wrk) on each gateway of each side.")
        add("")
        add("| | product-service calls | calls per product | cross-client hit ratio | peak RSS |")
        add("|---|---|---|---|---|")
        three_rss = sum(one["rss_three_kb"].values())
        for label, key, rss_kb in (("three gateways", "three", three_rss),
                                   ("bff-all", "all", one["rss_all_kb"])):
            x = one[key]
            add(f"| {label} | {x['calls']} | {x['calls'] / x['products']:.2f} | "
                f"{x['hit_ratio']:.0%} | {rss_kb / 1024:.0f} MiB |")
        add("")
        add("Peak RSS of the three: " + ", ".join(
            f"{g} {kb / 1024:.0f} MiB" for g, kb in one["rss_three_kb"].items()) + ".")
        add("")

    so = r.get("scale_out")
    if so:
        write_scale_out(add, so, pin)

    ev = r.get("events")
    if ev:
        write_events(add, ev, pin)

    lv = r.get("live")
    if lv:
        add(live_section(lv, command, pin, None))
        add("")

    rc = r.get("redis")
    if rc:
        add(redis_section(rc, command, pin, None))
        add("")

    notes = kept_section(path, NOTES_BEGIN, NOTES_END)
    add(notes if notes else f"{NOTES_BEGIN}\n## Findings\n\nNone written yet.\n{NOTES_END}")
    add("")
    add("## Method")
    add("")
    add(METHOD)
    add(LIVE_METHOD)
    add(REDIS_METHOD)
    add("")
    kept = kept_criterion_section(path)
    add(kept if kept else f"{CRITERION_BEGIN}\n## Micro-benchmarks (criterion)\n\n"
        f"Not recorded yet: see `cargo bench`.\n{CRITERION_END}")
    add("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_scale_out(add, so: dict, pin: dict) -> None:
    """The scale-out section: L2 vs L1 hits, calls per request over replicas, a private read's
    Redis round trip."""

    def per(n: float, d: float, digits: int = 2) -> str:
        return f"{n / d:.{digits}f}" if d else "n/a"

    def median_of(runs: list[dict], key: str, field: str) -> float:
        return statistics.median(x[key][field] for x in runs)

    add("## Scale-out (Redis)")
    add("")
    where = (f" on CPU {pin['other_cpu']} with the reference services (the replicas on CPU "
             f"{pin['gateway_cpu']}, like every gateway)" if pin["gateway_cpu"] is not None else "")
    add("bff-mobile replicas started for this section only (default settings, empty caches), "
        "sharing one private `redis-server` started by the harness (`--save \"\" --appendonly "
        f"no`, loopback){where}; Redis is emptied (`FLUSHALL`) before each configuration. "
        "Product-service calls come from the reference service's own counters; L1/L2 hits, "
        "lease waits and Redis commands from each replica's `/metrics` (`bff_cache_*_total"
        "{cache=\"products\"}`, `bff_redis_commands_total`: a pipeline counts one).")
    add("")

    # 1. L2 hit vs L1 hit
    hit = so["hit"]
    n = hit["l2"]["requests"]
    add("### L2 hit vs L1 hit: mobile product detail")
    add("")
    add(f"{n} products nobody had asked for (`GET /m/v1/products/{{id}}`), one request at a time: "
        "each on replica A (a miss of both levels: one product-service call, the value written "
        "to Redis), then each on replica B (not in B's memory: answered from Redis, an L2 hit), "
        "then each on B again (answered from B's own memory, an L1 hit).")
    add("")
    add("| answered from | requests | p50 | p99 | max | errors | product-service calls | "
        "L2 hits | L2 misses | L1 hits | Redis commands / request |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, label in (("miss", "the product service (replica A: miss)"),
                       ("l2", "Redis (replica B: L2 hit)"),
                       ("l1", "B's own memory (replica B again: L1 hit)")):
        x = hit[key]
        cn = x["counters"]
        add(f"| {label} | {x['requests']} | {ms(x['p50'])} | {ms(x['p99'])} | {ms(x['max'])} | "
            f"{x['errors']} | {x['product_calls']} | {cn['l2_hits']:.0f} | "
            f"{cn['l2_misses']:.0f} | {cn['l1_hits']:.0f} | "
            f"{per(cn['redis_commands'], x['requests'])} |")
    add("")
    l2, l1, miss = hit["l2"], hit["l1"], hit["miss"]
    add(f"At p50 an L2 hit costs {ms(l2['p50'] - l1['p50'])} more than an L1 hit, and saves "
        f"{ms(miss['p50'] - l2['p50'])} against a call to the product service (at {LATENCY} per "
        "call).")
    surprises = []
    if l2["product_calls"] or l2["counters"]["l2_hits"] != n:
        surprises.append(f"B's first pass made {l2['product_calls']} product-service call(s) and "
                         f"counted {l2['counters']['l2_hits']:.0f} L2 hits for {n} requests "
                         f"(expected 0 and {n})")
    if l1["product_calls"] or l1["counters"]["l2_hits"] or l1["counters"]["l1_hits"] != n:
        surprises.append(f"B's second pass made {l1['product_calls']} product-service call(s), "
                         f"{l1['counters']['l2_hits']:.0f} L2 hits and "
                         f"{l1['counters']['l1_hits']:.0f} L1 hits for {n} requests "
                         f"(expected 0, 0 and {n})")
    if miss["product_calls"] != n:
        surprises.append(f"A's pass made {miss['product_calls']} product-service calls for {n} "
                         "products (expected one each)")
    for key, label in (("miss", "A's pass"), ("l2", "B's first pass"), ("l1", "B's second pass")):
        if trouble := redis_trouble(hit[key]["counters"]):
            surprises.append(f"{label}: {trouble}")
    if surprises:
        add(" **Not as expected:** " + "; ".join(surprises) + ". (After a Redis error a replica "
            "skips Redis for `shared.retry_after`, 1 s by default: what it fetches meanwhile is "
            "not written there, so another replica fetches it again.)")
    add("")
    runs = hit["wrk"]
    add(f"Throughput (wrk, {CONNECTIONS} connections, {DURATION} s per run, median of "
        f"{len(runs)}): each run cycles through {L2_RUN_PRODUCTS} products that A has just "
        "fetched (so Redis holds them fresh), on A (all in its own memory: L1 hits) and then on "
        "replica C, whose own cache keeps an entry 1 ms and never serves it stale "
        "(`BFF_DOWNSTREAM__CACHE__MAX_TTL=1ms`, `…__STALE_WHILE_REVALIDATE=0s`), so each of its "
        "requests is answered from Redis and then kept in its own cache, as every L2 hit is (the L2 "
        "hits per request below say how many were).")
    add("")
    add("| | req/s | p50 | p99 | errors | L2 hits / request | product-service calls / request | "
        "Redis commands / request |")
    add("|---|---|---|---|---|---|---|---|")
    for key, label in (("l1", "L1 hit (replica A)"), ("l2", "L2 hit (replica C)")):
        reqs = sum(x[key]["requests"] for x in runs)
        add(f"| {label} | {median_of(runs, key, 'rps'):.0f} | {ms(median_of(runs, key, 'p50'))} | "
            f"{ms(median_of(runs, key, 'p99'))} | {sum(x[key]['errors'] for x in runs)} / {reqs} "
            f"| {per(sum(x[key]['counters']['l2_hits'] for x in runs), reqs, 3)} | "
            f"{per(sum(x[key]['product_calls'] for x in runs), reqs, 4)} | "
            f"{per(sum(x[key]['counters']['redis_commands'] for x in runs), reqs, 3)} |")
    ratio = statistics.median(x["l2"]["rps"] / x["l1"]["rps"] for x in runs if x["l1"]["rps"])
    add(f"| **L2 ÷ L1** | **{ratio:.2f}×** | | | | | | |")
    add("")
    add("Per run (L1/L2 req/s): "
        + ", ".join(f"{x['l1']['rps']:.0f}/{x['l2']['rps']:.0f}" for x in runs) + ".")
    surprises = []
    for i, x in enumerate(runs, 1):
        c = x["l2"]["counters"]
        if c["l2_hits"] < 0.95 * x["l2"]["requests"]:
            surprises.append(f"run {i}: only {c['l2_hits']:.0f} of C's {x['l2']['requests']} "
                             f"requests were L2 hits ({x['l2']['product_calls']} product-service "
                             "calls)")
        for key, name in (("l1", "A"), ("l2", "C")):
            if trouble := redis_trouble(x[key]["counters"]):
                surprises.append(f"run {i}, {name}: {trouble}")
    if surprises:
        add(" **Not as expected:** " + "; ".join(surprises) + ".")
    add("")

    # 2. Calls per request over 1 and 3 replicas
    mix = so["mix"]
    first = mix[0]
    add("### Downstream calls per request, 1 and 3 replicas")
    add("")
    add(f"{first['products']} products nobody had asked for, each requested {MIX_REPEATS} times "
        f"(mobile product detail): {first['requests']} requests in one shuffled order, the same "
        "for each row; request i goes to replica i mod the number of replicas (round-robin), "
        f"{MIX_CONCURRENCY} at a time; replicas freshly started for each row. One call per "
        f"product is the least possible ({1 / MIX_REPEATS:.2f} per request).")
    add("")
    add("| | product-service calls | calls / request | calls / product | L2 hits | L2 misses | "
        "lease waits | Redis commands / request | Redis errors | p50 | p99 | errors |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in mix:
        cn = x["counters"]
        shared = (f"{cn['l2_hits']:.0f} | {cn['l2_misses']:.0f} | {cn['lease_waits']:.0f} | "
                  f"{per(cn['redis_commands'], x['requests'])} | {cn['redis_errors']:.0f}"
                  if x["redis"] else "– | – | – | – | –")
        add(f"| {x['label']} | {x['product_calls']} | {per(x['product_calls'], x['requests'])} | "
            f"{per(x['product_calls'], x['products'])} | {shared} | {ms(x['p50'])} | "
            f"{ms(x['p99'])} | {x['errors']} |")
    add("")
    trouble = [f"{x['label']}: {t}" for x in mix if (t := redis_trouble(x["counters"]))]
    if trouble:
        add("**Redis trouble:** " + "; ".join(trouble) + ".")
        add("")

    # 3. Private read
    pv = so["private"]
    probes, runs = pv["probes"], pv["wrk"]
    add("### What a Redis round trip adds to a private read")
    add("")
    add("`GET /m/v1/cart` of one signed-in user (20 lines, their products cached) on a replica "
        "without Redis and on one with it (replica A above). The cart is in the private cache "
        "(`private_cache.ttl`, 2 s), so few reads call the cart service; with Redis every read "
        "first `GET`s the owner's shared generation (read-your-writes across replicas). Probes: "
        f"{probes['local']['requests']} requests one at a time; wrk: {CONNECTIONS} connections, "
        f"{DURATION} s per run, median of {len(runs)}, the two replicas one after the other.")
    add("")
    add("| | probes p50 | probes p99 | wrk req/s | wrk p50 | wrk p99 | errors | "
        "Redis commands / request | downstream calls / request |")
    add("|---|---|---|---|---|---|---|---|---|")
    for key, label in (("local", "no Redis"), ("redis", "Redis")):
        p = probes[key]
        reqs = sum(x[key]["requests"] for x in runs)
        commands = p["counters"]["redis_commands"] + sum(
            x[key]["counters"]["redis_commands"] for x in runs)
        calls = p["calls"] + sum(x[key]["calls"] for x in runs)
        add(f"| {label} | {ms(p['p50'])} | {ms(p['p99'])} | {median_of(runs, key, 'rps'):.0f} | "
            f"{ms(median_of(runs, key, 'p50'))} | {ms(median_of(runs, key, 'p99'))} | "
            f"{p['errors'] + sum(x[key]['errors'] for x in runs)} / {p['requests'] + reqs} | "
            f"{per(commands, p['requests'] + reqs)} | {per(calls, p['requests'] + reqs, 4)} |")
    local_rps = median_of(runs, "local", "rps")
    redis_rps = median_of(runs, "redis", "rps")
    add("")
    add(f"One at a time, Redis adds {ms(probes['redis']['p50'] - probes['local']['p50'])} at p50 "
        f"and {ms(probes['redis']['p99'] - probes['local']['p99'])} at p99; under load the "
        f"replica with Redis serves {redis_rps / local_rps:.2f}× the reads per second of the one "
        "without (per run, no Redis/Redis req/s: "
        + ", ".join(f"{x['local']['rps']:.0f}/{x['redis']['rps']:.0f}" for x in runs) + ").")
    trouble = [f"probes: {t}"] if (t := redis_trouble(probes["redis"]["counters"])) else []
    trouble += [f"run {i}: {t}" for i, x in enumerate(runs, 1)
                if (t := redis_trouble(x["redis"]["counters"]))]
    if trouble:
        add(" **Redis trouble** (reads that skipped the shared generation): "
            + "; ".join(trouble) + ".")
    add("")


def write_events(add, ev: dict, pin: dict) -> None:
    """The events section: eviction latency, events on vs off for the home screen and a list
    page, and the hit ratio of a read-mostly mix under a price change every second."""

    def ratio(c: dict, cache: str) -> str:
        hits, misses = c[f"hits_{cache}"], c[f"misses_{cache}"]
        return f"{hits / (hits + misses):.1%}" if hits + misses else "–"

    add("## Events (change events on Redis Streams)")
    add("")
    add("The product service publishes each back-office change (`--events-redis-url`, on a private "
        "`redis-server` as in the scale-out section) and bff-mobile replicas consume them. "
        "**Events on:** `BFF_REDIS_URL` set (events are on by default with Redis) and "
        "`BFF_DOWNSTREAM__CACHE__EVENT_DRIVEN_MAX_TTL=10m`. **Events off:** no Redis: ordinary "
        "TTLs (products min(`max_ttl` 60 s, service `max-age` 30 s), pages "
        "`page_ttl` 5 s). Changes are `PATCH /__admin/products/{id}` "
        "`{\"price\":{...}}` on the product service, which answers after appending the event; "
        f"reference-service latency {LATENCY} per call. Hit ratios are hits/(hits+misses) of the "
        "replica's `bff_cache_hits_total`/`bff_cache_misses_total` over the run.")
    add("")
    lat = ev["latency"]
    c = lat["counters"]
    add("### Time from a change to its eviction")
    add("")
    add(f"{lat['changes']} price changes of `{lat['product']}`, one after the other, on a replica "
        "with events on, while a Python thread sends `GET /m/v1/products/{id}` again and again "
        "(one keep-alive connection) and notes when each was sent and which price it showed. "
        "The eviction happened between the last GET sent that showed the old price and the "
        "first that showed the new one. *First fresh GET sent*: from the PATCH sent, and from "
        "its answer (negative: before the client had the answer); *last stale GET sent*: from "
        "the PATCH's answer; *shown*: from the PATCH's answer to the end of the first fresh GET "
        f"(it fetches the product again: one {LATENCY} call).")
    add("")
    add("| changes | first fresh GET sent, from PATCH sent: p50 | p99 | max | from PATCH answer: "
        "p50 | p99 | before the answer | last stale GET sent, from answer: p50 | max | shown "
        "p50 | shown p99 | never shown (5 s) | events applied |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    add(f"| {lat['changes']} | {ms(lat['evicted_p50'])} | {ms(lat['evicted_p99'])} | "
        f"{ms(lat['evicted_max'])} | {ms(lat['after_answer_p50'])} | "
        f"{ms(lat['after_answer_p99'])} | {lat['before_answer']} | "
        f"{ms(lat['stale_after_p50'])} | {ms(lat['stale_after_max'])} | "
        f"{ms(lat['shown_p50'])} | {ms(lat['shown_p99'])} | {lat['never']} | "
        f"{c['events_applied']:.0f} of {c['events']:.0f} |")
    add("")
    add("What it shows: at p50 the eviction lies between "
        f"{ms(lat['stale_after_p50'])} and {ms(lat['after_answer_p50'])} from the moment the "
        f"client had the PATCH's answer (the XADD is before it); p99 of the upper bound "
        f"{ms(lat['after_answer_p99'])}; in {lat['before_answer']} of {lat['changes']} changes "
        "the new price showed before the client even had the answer"
        + (f"; **{lat['never']} change(s) never showed within 5 s**" if lat["never"] else
           "; every change showed")
        + f". A client sees the new price {ms(lat['shown_p50'])} (p50) after the answer, most "
        "of it the refetch. (From the PATCH sent, the times include the product service's own "
        "latency.) Without events the old price is served until its TTL (up to 30 s).")
    add("")
    cmp = ev["compare"]
    add("### Home screen and a list page, events on vs off")
    add("")
    add(f"Anonymous `GET /m/v1/home`, {cmp['off']['home']['requests']} one at a time (Python "
        f"probe) spread over {HOME_PROBE_SPAN_S:.0f} s (longer than the 5 s page TTL), then `GET /m/v1/products?category={ev['category']}` under wrk ({RUNS} run(s), "
        "median), each on a warm replica with no changes meanwhile.")
    add("")
    add("| events | home p50 | home p99 | product calls (home) | list req/s | list p50 | "
        "list p99 | product calls (list, all runs) / request | pages hit ratio (both) |")
    add("|---|---|---|---|---|---|---|---|---|")
    for key in ("off", "on"):
        x = cmp[key]
        h = x["home"]
        med = lambda f: statistics.median(r[f] for r in x["page"])  # noqa: E731
        errors = h["errors"] + sum(r["errors"] for r in x["page"])
        calls = sum(r["calls"] for r in x["page"])
        sent = sum(r["requests"] for r in x["page"])
        add(f"| {key} | {ms(h['p50'])} | {ms(h['p99'])} | {h['calls']} | "
            f"{med('rps'):.0f} | {ms(med('p50'))} | {ms(med('p99'))} | "
            f"{calls} / {sent} | {ratio(x['counters'], 'pages')} |"
            + (f" ({errors} errors)" if errors else ""))
    add("")
    on_rps = statistics.median(r["rps"] for r in cmp["on"]["page"])
    off_rps = statistics.median(r["rps"] for r in cmp["off"]["page"])
    add(f"What it shows: list page {on_rps:.0f} req/s with events vs {off_rps:.0f} without "
        f"({on_rps / off_rps:.2f}×); home p50 {ms(cmp['on']['home']['p50'])} vs "
        f"{ms(cmp['off']['home']['p50'])}. Without events a page is fetched again once its 5 s "
        "are up, apparently in the background while the old one is served (stale-while-"
        "revalidate: the counters show calls but no page miss), so no request waits for it.")
    add("")
    mix = ev["mix"]
    add("### Hit ratio of a read-mostly mix with a price change every second")
    add("")
    add(f"wrk cycling over {ev['mix_paths']} paths: the product screens of "
        f"{EVENT_MIX_PRODUCTS} products (`p-04001`…), and after every tenth a category's list "
        "page (categories in turn) and the anonymous home screen; the replica is warmed with one "
        f"pass first, then {EVENT_MIX_SECONDS} s of wrk while a thread changes the price of one "
        f"of those products, at random, every {CHANGE_EVERY_S:.0f} s.")
    add("")
    add("| events | price changes | req/s | p50 | p99 | products hit ratio (misses) | pages hit "
        "ratio (misses) | product calls / requests | events applied | errors |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for key in ("off", "on"):
        x = mix[key]
        cn = x["counters"]
        add(f"| {key} | {x['changes']} | {x['rps']:.0f} | {ms(x['p50'])} | {ms(x['p99'])} | "
            f"{ratio(cn, 'products')} ({cn['misses_products']:.0f}) | {ratio(cn, 'pages')} "
            f"({cn['misses_pages']:.0f}) | {x['calls']} / {x['requests']} | "
            f"{cn['events_applied']:.0f} | {x['errors']} |")
    add("")
    failed = [f"{k}: {len(mix[k]['failed_changes'])}" for k in ("off", "on")
              if mix[k]["failed_changes"]]
    on_c = mix["on"]["counters"]
    add(f"What it shows: with events, {mix['on']['changes']} changes cost "
        f"{mix['on']['calls']} product-service calls ({on_c['misses_products']:.0f} product and "
        f"{on_c['misses_pages']:.0f} page misses: more misses than calls, so a miss seems to be "
        "counted for every request that waits on the one refetch); without, the pages' 5 s "
        f"refreshes cost {mix['off']['calls']} calls and the counters show no miss (background "
        "refreshes apparently count as hits) — but the changed products stay stale until their "
        "TTL (up to 30 s), whereas with events each is fresh on the next read."
        + (" **Failed changes:** " + ", ".join(failed) + "." if failed else ""))
    add("")


METHOD = """\
- **Processes.** `scripts/bench` builds the release binaries and starts, directly (not through
  `bff-dev`), the three reference services as separate processes (`reference-services --service
  … --latency`), the three gateways with their default configuration, and `bench-baseline`. Each
  gateway is wired to the services with `BFF_*_URL` and given a fresh HS256 secret (web, mobile)
  or API key (partner) for the run. The one setting that differs from the defaults: the partner
  benchmark key's quota is 1,000,000/s, so the rate limiter still runs on every request but never
  answers 429 (the default quota, 10/s, would make a throughput test measure the limiter's 429s).
  Gateways log every request at `info` (the default), into a file.
- **Steady load.** `wrk -t1 -cN --latency` for a fixed duration per run against the gateway, then
  against `bench-baseline` — a bare axum handler answering the very bytes the gateway answered for
  that request (captured after warming the cache) on the same CPU. The median of the runs is
  reported; ratios are taken per run, then the median. Errors are non-2xx/3xx responses plus
  socket errors.
- **Downstream calls per request.** The reference services' counters are reset
  (`POST /__admin/reset`) before a run and read (`GET /__admin/stats`) after it; the sum over the
  three services is divided by the number of requests sent.
- **Peak RSS.** `VmHWM` of each gateway process from `/proc/PID/status`, sampled after each of its
  runs (and before each restart); the maximum is reported.
- **Cold cart.** Before any steady load, each of the probe users is given (through the cart
  service, at no latency) a cart of 20 products that appear in no other cart and that no request
  has asked for yet; one request per user, one at a time, is cold (cart and products both fetched).
  After 2.5 s (the private cart cache holds an entry 2 s) the same users again: products cached,
  cart fetched — "products warm".
- **Cold home screen.** The catalog part of the home screen (featured products, categories) is the
  same for every user, so the only honest cold start is an empty cache: bff-mobile is restarted
  before each cold request (a fresh process, connection pools empty too, so this includes the
  gateway opening its connections to the services over loopback). Warm: the catalog cached, each
  request by a user whose cart and orders are not in the private cache yet (two concurrent calls).
- **Stampede.** A Python asyncio client opens all connections first, then writes the same request
  on each at once (`Connection: close`), for a product id that nothing had requested, and counts
  the product service's requests.
- **Slow product service.** `PUT /__admin/faults {"latency":"100ms"}` on the product service, then
  requests for product ids not yet cached (each request misses), 16 at a time, through a Python
  keep-alive client; restored afterwards.
- **Scale-out (Redis).** `scripts/bench` installs `redis-server` when it is missing
  (`scripts/ensure-redis-server`); the harness starts its own on a free loopback port with
  persistence off, pinned with the reference services, and stops it at the end. bff-mobile
  replicas get `BFF_REDIS_URL` (or an empty one: no Redis) and a `/metrics` listener each, read
  before and after every measurement. The replicas run on the gateways' CPU, so under wrk one
  replica is loaded at a time while the others idle; Redis shares its CPU with wrk.
- **Events.** At the end, the product service is restarted with `--events-redis-url` (same
  seed and latency) on a fresh private `redis-server`; one bff-mobile replica has Redis and
  `EVENT_DRIVEN_MAX_TTL=10m` (events on), another none (events off). Prices are changed with
  `PATCH /__admin/products/{id}` (a price just below the seeded one, alternating, so every
  change is a real one and stays below any list price); cache counters are read from the
  replica's `/metrics` before and after each measurement.
- **Python probes** measure from the client, one request at a time unless stated; their overhead
  (≈0.1–0.3 ms per request) is included in their latencies."""


LIVE_BEGIN = "<!-- live:begin -->"
LIVE_END = "<!-- live:end -->"

LIVE_METHOD = """\
- **Live updates.** A bff-web of its own (`BFF_REDIS_URL` set, stream limits raised for one
  client address, otherwise defaults) over a fresh private `redis-server`, the product service
  restarted with `--events-redis-url`. The WebSocket client is `bench-live` (a release binary of
  this workspace: tokio and tokio-tungstenite on one thread, pinned with the services), which
  opens the sockets, answers keep-alives, records each `next` with its arrival time and reports
  in JSON lines; the harness reads the gateway's `/proc/PID/status` (VmRSS, VmHWM) and
  `/proc/PID/stat` (utime + stime, in ticks of 1/`SC_CLK_TCK` s) and its `/metrics`
  (`bff_live_subscribers`, `bff_live_topics`, `bff_live_signals_total`). RSS leaves out the
  kernel's memory for the sockets (buffers and socket structures, on both ends). A change's time
  is its stream entry's id (ms, taken by Redis from this machine's clock at the `XADD`) to the
  `next`'s arrival at the client (µs, the same clock). `BENCH_ONLY=live ./scripts/bench` builds
  only bff-web, the reference services and bench-live, runs only this section and rewrites only
  it and this line."""


def live_section(lv: dict, command: str, pin: dict, elapsed_s: float | None) -> str:
    """The live-updates section, between its markers (a BENCH_ONLY=live run replaces just it)."""
    lines: list[str] = []
    add = lines.append
    idle, fan = lv["idle"], lv["fanout"]
    limits = lv["limits"]
    add(LIVE_BEGIN)
    add("## Live updates (subscriptions)")
    add("")
    took = f"; the section took {elapsed_s:.0f} s" if elapsed_s is not None else ""
    add(f"Measured by `{command}` on commit {commit()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{took}.")
    add("")
    where = (f" `bench-live` runs on CPU {pin['other_cpu']} with the product service, Redis and "
             f"the harness, the gateway on CPU {pin['gateway_cpu']}."
             if pin["gateway_cpu"] is not None else "")
    add("A bff-web started for this section only, with Redis (`BFF_REDIS_URL`, a private "
        "`redis-server` to which the product service, restarted with `--events-redis-url`, "
        "publishes its changes), so that subscriptions follow change events rather than polls; "
        "one client address holds every socket, so `gateway.subscriptions.max_streams_per_address` "
        f"and `max_streams` are {limits['BFF_GATEWAY__SUBSCRIPTIONS__MAX_STREAMS']} and "
        f"`server.max_connections` {limits['BFF_SERVER__MAX_CONNECTIONS']}; everything else at its "
        "default (`keep_alive` 15 s). Each socket: the upgrade offering `graphql-transport-ws`, "
        "`connection_init`, `connection_ack`, then one `subscribe` to `subscription Live($id: ID!) "
        "{ productUpdated(id: $id) { id price { amountMinor } } }`, anonymous." + where
        + f" Reference-service latency {LATENCY} per call.")
    add("")

    # Idle
    n = idle["subscribed"]
    bare = idle["bare"]
    per_kib = (idle["rss_after_kb"] - idle["rss_before_kb"]) / n if n else NAN
    bare_kib = ((bare["rss_after_kb"] - bare["rss_before_kb"]) / bare["opened"]
                if bare["opened"] else NAN)
    cpu_pct = 100 * idle["cpu_s"] / idle["wall_s"]
    add("### Idle subscriptions: memory and CPU")
    add("")
    add(f"{idle['requested']} sockets, opened 200 handshakes at a time, twice: first only "
        "initialised (`connection_ack`, no subscription), then each subscribed to the (i mod "
        f"{idle['products']})-th of {idle['products']} products (`p-04801`…; opened in "
        f"{idle['open_s']:.1f} s); then nothing but the gateway's keep-alive `ping`s, each "
        "answered `pong`. Each round on a freshly started gateway (so that neither starts from "
        "memory the other left with the allocator). Gateway RSS (VmRSS): before the round (after "
        "a warm-up: each product read once through a query, ten subscriptions opened and "
        "closed), with every socket open "
        "(2 s after the last was acknowledged, or after `bff_live_subscribers` counted them all), "
        f"and 2 s after they all closed. CPU: over {idle['wall_s']:.0f} s of idling, one "
        "keep-alive period (about one ping per socket); run-queue wait: time the gateway's "
        "threads were ready to run but another process had its CPU.")
    add("")
    add("| sockets | gateway: subscribers / topics | RSS before | RSS with the sockets | "
        "per connection | RSS 2 s after closing |")
    add("|---|---|---|---|---|---|")
    add(f"| {bare['opened']} of {idle['requested']}, initialised, no subscription | – | "
        f"{bare['rss_before_kb'] / 1024:.1f} MiB | {bare['rss_after_kb'] / 1024:.1f} MiB | "
        f"{bare_kib:.1f} KiB | {bare['rss_closed_kb'] / 1024:.1f} MiB |")
    add(f"| {n} of {idle['requested']}, one subscription each | "
        f"{idle['gateway_subscribers']:.0f} / {idle['gateway_topics']:.0f} | "
        f"{idle['rss_before_kb'] / 1024:.1f} MiB | {idle['rss_after_kb'] / 1024:.1f} MiB | "
        f"**{per_kib:.1f} KiB** | {idle['rss_closed_kb'] / 1024:.1f} MiB |")
    add("")
    per_ping = 1e6 * idle["cpu_s"] / idle["pings"] if idle["pings"] else NAN
    add("| idle for | gateway CPU | per keep-alive | gateway run-queue wait | pings answered | "
        "client CPU | lost / unexpected | peak RSS |")
    add("|---|---|---|---|---|---|---|---|")
    add(f"| {idle['wall_s']:.1f} s | **{cpu_pct:.2f} %** of a CPU ({idle['cpu_s']:.2f} s) | "
        + (f"{per_ping:.0f} µs" if idle["pings"] else "– (no ping in the window)")
        + f" | {idle['wait_s'] * 1000:.0f} ms | {idle['pings']} | "
        f"{idle['client_cpu_s']:.2f} s | {idle['lost']} / {idle['unexpected'] + idle['nexts']} | "
        f"{idle['rss_peak_kb'] / 1024:.1f} MiB |")
    add("")
    notes = []
    if idle["failed"] or bare["failed"]:
        notes.append(f"**{idle['failed'] + bare['failed']} sockets failed to open** (first: "
                     + "; ".join(idle["failures"][:3]) + ")")
    if idle["lost"] or idle["unexpected"] or idle["nexts"] or bare["lost"] or bare["unexpected"]:
        notes.append(f"**while idle: {idle['lost'] + bare['lost']} sockets lost, "
                     f"{idle['unexpected'] + bare['unexpected']} unexpected messages, "
                     f"{idle['nexts']} `next`s** (first: " + "; ".join(idle["samples"][:3]) + ")")
    if idle["gateway_subscribers_after_close"]:
        notes.append(f"**{idle['gateway_subscribers_after_close']:.0f} subscriptions still counted "
                     "15 s after every socket closed**")
    if idle["connections_after_close"] or bare["connections_after_close"]:
        notes.append(f"**{bare['connections_after_close']:.0f} and "
                     f"{idle['connections_after_close']:.0f} connections still counted open "
                     "15 s after every socket closed**")
    add(f"What it shows: {per_kib:.1f} KiB of gateway memory per idle subscribed WebSocket beyond "
        f"the idle process (target ≤ {LIVE_TARGET_KIB:.0f} KiB: "
        f"{verdict(per_kib <= LIVE_TARGET_KIB)}), of which {bare_kib:.1f} KiB the initialised "
        f"connection alone and {per_kib - bare_kib:.1f} KiB its subscription; idling, the gateway "
        f"used {cpu_pct:.2f} % of one CPU for {idle['pings']} keep-alives"
        + (f" ({per_ping:.0f} µs of CPU per ping, timers and wake-ups included)"
           if idle["pings"] else "") + ". Once the sockets closed, the gateway counted "
        f"{bare['connections_after_close'] + idle['connections_after_close']:.0f} connections "
        f"and {idle['gateway_subscribers_after_close']:.0f} subscriptions left; RSS 2 s later "
        "is what the allocator has given back to the system by then (it keeps freed memory for "
        "reuse; how much it returns, and when, varies from run to run)."
        + (" " + "; ".join(notes) + "." if notes else ""))
    add("")

    # Fan-out
    m = fan["subscribed"]
    calls_per_change = fan["calls"] / fan["changes"] if fan["changes"] else NAN
    add("### Fan-out of one change")
    add("")
    add(f"{fan['subscribers']} sockets subscribed to `{fan['product']}`. A first price change, not "
        f"timed, shows that every subscription follows it ({fan['primed']} of {m} got it); then "
        f"{fan['changes']} changes {LIVE_CHANGE_EVERY_S:.0f} s apart, each a new price through "
        "`PATCH /__admin/products/{id}` on the product service, which answers once the event is "
        "appended. A change's time: the ms part of the id of the catalog stream's last entry "
        f"(`XREVRANGE {LIVE_CATALOG_STREAM} + - COUNT 1` right after the PATCH's answer, checked "
        "to be that product's event), which Redis took from the machine's clock at the `XADD`; "
        "each `next` is stamped on arrival at the client with the same clock (µs). The id is "
        "truncated to the ms, so these times are up to 1 ms long. Every time includes one "
        f"product-service call ({LATENCY}): the subscribers' read of the changed product. "
        "Product-service calls: the service's own counters over the timed changes.")
    add("")
    cpu_per_change = 1000 * fan["cpu_s"] / fan["changes"]
    wait_per_change = 1000 * fan["wait_s"] / fan["changes"]
    add("| subscribers | changes | `next`s received / expected | XADD → `next` p50 | p99 | max | "
        "first subscriber (p50 over changes) | last subscriber (p50 over changes) | "
        "product-service calls / change | change signals | lost / unexpected / duplicates |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    add(f"| {m} | {fan['changes']} | {fan['deliveries']} / {fan['expected']} | "
        f"{ms(fan['p50'])} | **{ms(fan['p99'])}** | {ms(fan['max'])} | {ms(fan['first_p50'])} | "
        f"{ms(fan['last_p50'])} | **{calls_per_change:.2f}** ({fan['calls']}) | "
        f"{fan['signals']:.0f} | {fan['lost']} / {fan['unexpected']} / {fan['duplicates']} |")
    add("")
    add(f"Gateway CPU over the {fan['window_s']:.1f} s of the timed changes: {fan['cpu_s']:.2f} s, "
        f"{cpu_per_change:.0f} ms per change ({1000 * cpu_per_change / m:.0f} µs per push); "
        f"its threads waited {fan['wait_s'] * 1000:.0f} ms in all ({wait_per_change:.0f} ms per "
        "change) for a CPU another process held.")
    add("")
    add("Per change (first / p50 / last subscriber, received): "
        + ", ".join(f"{c['first']:.0f}/{c['p50']:.0f}/{c['last']:.0f} ms "
                    f"({c['received']})" for c in fan["per_change"]) + ".")
    add("")
    missing = fan["expected"] - fan["deliveries"]
    add(f"What it shows: {m} subscribers of one product had each change "
        f"{ms(fan['p50'])} (p50) and {ms(fan['p99'])} (p99) after its XADD (target p99 ≤ "
        f"{LIVE_TARGET_P99_MS:.0f} ms: {verdict(fan['p99'] <= LIVE_TARGET_P99_MS)}); the first "
        f"subscriber {ms(fan['first_p50'])} after it (one {LATENCY} product-service call "
        f"included), the last {ms(fan['last_p50'])} (p50 over the changes). The gateway spent "
        f"{cpu_per_change:.0f} ms of CPU per change ({1000 * cpu_per_change / m:.0f} µs per push: "
        "reading the cached product, resolving the selection, serializing and writing each "
        f"`next`, one subscriber after the other on its one CPU) and waited {wait_per_change:.0f} "
        "ms per change for that CPU. Product-service calls per change: "
        f"{calls_per_change:.2f} (target 1: "
        f"{verdict(abs(calls_per_change - 1) < 1e-9)})"
        + ("; every subscriber received every change." if not missing and not fan["lost"] else
           f"; **{missing} of {fan['expected']} pushes never arrived** "
           f"({fan['lost']} sockets lost; " + "; ".join(fan["samples"][:3]) + ").")
        + (f" {fan['failed']} sockets failed to subscribe." if fan["failed"] else ""))
    add("")
    add("| target (issue #25) | measured | |")
    add("|---|---|---|")
    add(f"| memory per idle WebSocket subscription ≤ {LIVE_TARGET_KIB:.0f} KiB beyond the idle "
        f"process | {per_kib:.1f} KiB | {verdict(per_kib <= LIVE_TARGET_KIB)} |")
    add(f"| a change reaches {m} subscribers: p99 ≤ {LIVE_TARGET_P99_MS:.0f} ms | "
        f"{ms(fan['p99'])} | {verdict(fan['p99'] <= LIVE_TARGET_P99_MS)} |")
    add(f"| one product-service call per change, whatever the subscribers | "
        f"{calls_per_change:.2f} | {verdict(abs(calls_per_change - 1) < 1e-9)} |")
    add(f"| every subscriber receives every change | {fan['deliveries']} of {fan['expected']} | "
        f"{verdict(not missing)} |")
    add(LIVE_END)
    return "\n".join(lines)


def update_live(path: str, command: str, r: dict) -> None:
    """BENCH_ONLY=live: replaces the live section (before the Findings if there is none yet) and
    the live line of the Method section; the rest of the report stays as it is."""
    section = live_section(r["live"], command, r["pinning"], r["elapsed_s"])
    with open(path) as f:
        text = f.read()
    old = kept_section(path, LIVE_BEGIN, LIVE_END)
    if old:
        text = text.replace(old, section)
    elif NOTES_BEGIN in text:
        text = text.replace(NOTES_BEGIN, section + "\n\n" + NOTES_BEGIN, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    # The Method line: replaced if there is one, else appended to the Method list.
    m = re.search(r"^- \*\*Live updates\.\*\*.*?(?=^- \*\*|^\s*$)", text, re.M | re.S)
    if m:
        text = text[:m.start()] + LIVE_METHOD + "\n" + text[m.end():]
    elif "\n## Method\n" in text:
        start = text.index("\n## Method\n") + len("\n## Method\n")
        end = text.find("\n\n", text.index("\n- ", start))
        end = len(text) if end < 0 else end
        text = text[:end] + "\n" + LIVE_METHOD + text[end:]
    with open(path, "w") as f:
        f.write(text)


REDIS_METHOD = """\
- **Redis cost per request.** A fresh private `redis-server` (as for scale-out), the three
  reference services restarted publishing their change events to it (`--events-redis-url`) at
  0 ms latency (no command count depends on it), and one gateway replica at a time with
  `BFF_REDIS_URL` set, `shared.command_timeout` 1 s (so that a stall of the shared machine does
  not make it fall back to in-process behaviour; fallbacks and errors are counted per row from
  its `/metrics`), `downstream.cache.event_driven_max_ttl` 10m (as `./scripts/dev --replicas`
  sets it) and every other setting at its default (events on). Redis' own `INFO
  commandstats`, `INFO stats` (`total_net_input_bytes`, `total_net_output_bytes`) and `INFO cpu`
  (`used_cpu_sys` + `used_cpu_user`) are read before and after thousands of requests of one kind
  (Python keep-alive client, 16 at a time) and 1 s of settling (the change-event consumers
  catch up); the harness's own `INFO` is taken off, and so is the background of the same
  processes idle for as long (measured next to each row, per command). Commands that a Lua script
  runs are counted by Redis too (under their own names, and their time inside the script's):
  which ones were sent by a client and which ran inside a script is taken from a sample of the
  same requests under `MONITOR` (also the source of the key patterns), never from the measured
  pass. *Redis µs* is commandstats `usec` of what clients sent (Redis' own timing of command
  execution, scripts including what they run); *CPU µs* is the whole process (parsing, network
  I/O, event loop), noisier. `BENCH_ONLY=redis ./scripts/bench` builds only the gateways, the
  reference services and bench-live, runs only this section and rewrites only it and this line."""


def redis_section(rc: dict, command: str, pin: dict, elapsed_s: float | None) -> str:
    """The Redis cost section, between its markers (a BENCH_ONLY=redis run replaces just it)."""
    lines: list[str] = []
    add = lines.append

    def cmds(r: dict) -> str:
        parts = []
        for name, per, key in r["top"][:7]:
            parts.append(f"{name.upper()} {per:.2f}" + (f" `{key}`" if key else ""))
        text = "; ".join(parts) if parts else "none"
        if r["inner"]:
            text += " — inside scripts: " + ", ".join(
                f"{name.upper()} {per:.2f}" for name, per, in r["inner"][:6])
        return text

    add(REDIS_BEGIN)
    add("## Redis cost per request (capacity model)")
    add("")
    took = f"; the section took {elapsed_s:.0f} s" if elapsed_s is not None else ""
    add(f"Measured by `{command}` on commit {commit()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{took}; redis-server "
        f"{rc['redis_version']} on {machine()}. [docs/SCALING.md](SCALING.md) turns these rows "
        "into a sizing table.")
    add("")
    where = (f" Redis, the services and the client on CPU {pin['other_cpu']}, the gateway on "
             f"CPU {pin['gateway_cpu']}." if pin.get("gateway_cpu") is not None else "")
    add(f"Each row: {rc['requests']} requests of one kind (products: as many distinct ones), "
        f"{rc['concurrency']} at a time, on one replica with `BFF_REDIS_URL` and "
        f"`shared.command_timeout` {rc.get('command_timeout', '50ms')} and "
        "`downstream.cache.event_driven_max_ttl` 10m (defaults otherwise, "
        "change events on; the default 50 ms made replicas fall back now and then on this "
        "shared machine, which saves commands: the last column says whether any did), the services publishing their changes to the same Redis; counts are "
        "Redis' own (`INFO commandstats` deltas) less the replicas' idle background. Event rows: "
        f"{rc['events']} price changes (`PATCH /__admin/products/{{id}}`, one every "
        f"{REDIS_EVENT_EVERY_S * 1000:.0f} ms) of one product that {rc['subscribers']} WebSocket "
        "subscriptions (`bench-live`) follow, per change; they include the product service's "
        "`XADD` and the refetch the subscriptions need. *Sent*: commands clients sent (a script is "
        "one); *executed*: also those scripts ran. *Gateway round trips*: the replicas' own "
        "`bff_redis_commands_total` (a pipeline or script counts one); *gateway CPU*: the "
        "replicas' utime + stime over the pass (`/proc/PID/stat`; ticks of 10 ms, the 1 s of "
        "settling included), a rough per-core cost for kinds no wrk row has." + where)
    add("")
    add("| request kind | gateway | requests | Redis commands / request: sent (executed) | "
        "commands per request, most first (key pattern) | Redis µs / request (commandstats) | "
        "Redis CPU µs / request (process) | bytes to Redis / request | bytes from Redis / request "
        "| gateway round trips / request | gateway CPU µs / request | Redis errors / fallbacks |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["product-l1", "product-l2", "product-miss", "mobile-cart", "web-cart", "checkout-1",
             "checkout-2", "partner", "event-1", "event-2"]
    for r in sorted(rc["rows"], key=lambda r: order.index(r["key"]) if r["key"] in order else 99):
        add(f"| {r['label']} | {r['gateway']} | {r['requests']} | **{r['sent']:.2f}** "
            f"({r['executed']:.2f}) | {cmds(r)} | {r['usec']:.2f} | {r['cpu_us']:.1f} | "
            f"{r['net_in']:.0f} | {r['net_out']:.0f} | {r['round_trips']:.2f} | "
            f"{r.get('gateway_cpu_us', NAN):.0f} | {r.get('redis_errors', NAN):.0f} / "
            f"{r.get('redis_fallbacks', NAN):.0f} |")
    add("")
    rows = {r["key"]: r for r in rc["rows"]}
    for kind, what in (("event", "change event"), ("checkout", "checkout")):
        one, two = rows.get(f"{kind}-1"), rows.get(f"{kind}-2")
        if not one or not two:
            continue
        extra = redis_extra(one, two)
        add(f"Per {what}, each further replica consuming the change events adds "
            f"**{two['sent'] - one['sent']:.2f} commands sent** "
            f"({two['executed'] - one['executed']:.2f} executed: "
            + ", ".join(f"{k.upper()} {v:+.2f}" for k, v in extra["calls"]) + f"), "
            f"{extra['usec']:.1f} µs of Redis time (the added commands at the second row's time "
            "per call) and "
            f"{two['net_in'] - one['net_in'] + two['net_out'] - one['net_out']:.0f} bytes "
            "(the difference of the two rows).")
        add("")
    ev = [r for r in rc["rows"] if r["key"].startswith("event-")]
    if ev:
        add("`next`s received by the subscribers, of changes × subscribers: "
            + ", ".join(f"{r['outcome'].get('nexts', 0)} of {r['outcome'].get('expected', 0)}"
                        for r in ev) + ".")
        add("")
    add(f"Idle replicas (nothing sent to them; {rc['idle_seconds']} s each, the background "
        "subtracted above): per second.")
    add("")
    add("| idle | commands / s | commands per second, most first | Redis µs / s (commandstats) | "
        "Redis CPU µs / s (process) | bytes to / from Redis per s |")
    add("|---|---|---|---|---|---|")
    for i in rc["idle"]:
        d = i["delta"]
        s = d["seconds"]
        per = sorted(((k, v / s) for k, v in d["calls"].items()), key=lambda x: -x[1])
        text = "; ".join(f"{k.upper()} {v:.2f}" for k, v in per[:6]) or "none"
        add(f"| {i['label']} | {sum(d['calls'].values()) / s:.2f} | {text} | "
            f"{sum(d['usec'].values()) / s:.1f} | {d['cpu_s'] * 1e6 / s:.0f} | "
            f"{d['net_in'] / s:.0f} / {d['net_out'] / s:.0f} |")
    add("")
    if rc.get("keyspace"):
        add(f"What the section left in Redis, by key pattern (`redis-cli --scan`, `MEMORY USAGE "
            f"key SAMPLES 0`, `PTTL`, `XLEN`; `used_memory` {rc['used_memory'] / 2**20:.1f} MiB), "
            f"after the rows above: {2 * (rc['requests'] + REDIS_SAMPLE)} checkouts (one user each), "
            f"{REDIS_CART_USERS} users reading carts of {CART_LINES} lines, about "
            f"{min(rc['requests'], REDIS_SAMPLE_FIRST - REDIS_MISS_FIRST) + REDIS_SAMPLE + REDIS_CART_USERS * CART_LINES} "
            f"products fetched, {2 * (rc['events'] + REDIS_SAMPLE_EVENTS) + 1} price changes. "
            "Streams are trimmed by their producers (`MAXLEN ~ 100000` in the reference "
            "services); the gateways only read them.")
        add("")
        add("| key pattern | type | keys | bytes per key | entries (streams) | bytes per entry | "
            "median TTL |")
        add("|---|---|---|---|---|---|---|")
        for g in rc["keyspace"]:
            per_entry = f"{g['bytes'] / g['entries']:.0f}" if g["entries"] else "–"
            ttl = f"{g['ttl_s']:.0f} s" if g["ttl_s"] is not None else "none"
            add(f"| `{g['pattern']}` | {g['type']} | {g['keys']} | {g['bytes'] / g['keys']:.0f} | "
                f"{g['entries'] or '–'} | {per_entry} | {ttl} |")
        add("")
    add("Command counts and bytes are exact for what ran (the idle background subtracted is a "
        "rate, so fractions of a command can remain); the µs are times on a shared 2-CPU machine "
        "and move from run to run. The idle rows contain commands that scripts run too "
        "(the change-event consumer's read script runs `INFO`, `EXISTS`, `XINFO` and `XRANGE`).")
    add(REDIS_END)
    return "\n".join(lines)


def redis_extra(one: dict, two: dict) -> dict:
    """What the second of two rows runs more per request, by command, and its Redis time: the
    added calls sent by clients at the second row's time per call (a difference of the rows' µs
    would be mostly noise)."""
    n1, n2 = one["requests"], two["requests"]
    d1, d2 = one["delta"]["calls"], two["delta"]["calls"]
    calls = sorted(((k, d2.get(k, 0) / n2 - d1.get(k, 0) / n1) for k in set(d1) | set(d2)),
                   key=lambda x: -abs(x[1]))
    usec = 0.0
    sample = two["sample"]
    for name, more in calls:
        c = d2.get(name, 0)
        t, i = sample["top"].get(name, 0), sample["inner"].get(name, 0)
        share_top = t / (t + i) if t + i else 1.0
        if c and more > 0:
            usec += more * share_top * two["delta"]["usec"].get(name, 0) / c
    return {"calls": [(k, v) for k, v in calls if abs(v) >= 0.05], "usec": usec}


def update_redis(path: str, command: str, r: dict) -> None:
    """BENCH_ONLY=redis: replaces the Redis section (after the live one, or before the Findings,
    if there is none yet) and its Method line; the rest of the report stays as it is."""
    section = redis_section(r["redis"], command, r["pinning"], r["elapsed_s"])
    with open(path) as f:
        text = f.read()
    old = kept_section(path, REDIS_BEGIN, REDIS_END)
    if old:
        text = text.replace(old, section)
    elif LIVE_END in text:
        text = text.replace(LIVE_END, LIVE_END + "\n\n" + section, 1)
    elif NOTES_BEGIN in text:
        text = text.replace(NOTES_BEGIN, section + "\n\n" + NOTES_BEGIN, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    m = re.search(r"^- \*\*Redis cost per request\.\*\*.*?(?=^- \*\*|^\s*$)", text, re.M | re.S)
    if m:
        text = text[:m.start()] + REDIS_METHOD + "\n" + text[m.end():]
    else:
        m = re.search(r"^- \*\*Live updates\.\*\*.*?(?=^- \*\*|^\s*$)", text, re.M | re.S)
        if m:
            text = text[:m.end()] + REDIS_METHOD + "\n" + text[m.end():]
        elif "\n## Method\n" in text:
            start = text.index("\n## Method\n") + len("\n## Method\n")
            end = text.find("\n\n", text.index("\n- ", start))
            end = len(text) if end < 0 else end
            text = text[:end] + "\n" + REDIS_METHOD + text[end:]
    with open(path, "w") as f:
        f.write(text)


def only_redis(args: argparse.Namespace, stack: Stack, started: float) -> int:
    """BENCH_ONLY=redis: the reference services and the Redis cost section, nothing else; only
    that section of the report (and its Method line) is rewritten."""

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        log(f"logs in {stack.work_dir}")
        for service in SERVICES:
            stack.start_service(service)
        stack.wait_healthy(list(SERVICES))
        results = {"redis": redis_costs(stack)}
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        stack.stop_all()
        return 130
    finally:
        stack.stop_all()
    results["elapsed_s"] = time.monotonic() - started
    results["pinning"] = {"gateway_cpu": stack.gateway_cpu, "other_cpu": stack.other_cpu}
    with open(os.path.join(stack.work_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    update_redis(args.out, args.command, results)
    log(f"updated the Redis cost section of {args.out} ({results['elapsed_s']:.0f}s; raw data "
        f"in {stack.work_dir})")
    return 0


def criterion_section(command: str, log_paths: list[str]) -> str:
    """The micro-benchmark section, from the output of `cargo bench` (criterion)."""
    rows = []
    pattern = re.compile(r"^(\S+)\s+time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", re.M)
    for path in log_paths:
        crate = os.path.basename(path).removesuffix(".log")
        with open(path) as f:
            text = f.read()
        # criterion prints a long name on its own line and the times on the next one.
        text = re.sub(r"^(\S+)\n\s+time:", r"\1 time:", text, flags=re.M)
        for name, low, mid, high in pattern.findall(text):
            rows.append(f"| {crate} | `{name}` | {mid} | {low} – {high} |")
    lines = [
        CRITERION_BEGIN,
        "## Micro-benchmarks (criterion)",
        "",
        f"Command: `{command}` — on {machine()}, commit {commit()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "Each bench file's `//!` says what one iteration is. Time per iteration: criterion's "
        "estimate and its 95% confidence interval.",
        "",
        "| crate | benchmark | time | interval |",
        "|---|---|---|---|",
        *rows,
        CRITERION_END,
    ]
    return "\n".join(lines)


def update_criterion(out: str, command: str, log_paths: list[str]) -> None:
    section = criterion_section(command, log_paths)
    try:
        with open(out) as f:
            text = f.read()
    except OSError:
        text = "# Benchmarks\n\n"
    old = kept_criterion_section(out)
    text = text.replace(old, section) if old else text.rstrip("\n") + "\n\n" + section + "\n"
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "criterion":
        # scripts/bench.py criterion OUT COMMAND LOG...
        update_criterion(sys.argv[2], sys.argv[3], sys.argv[4:])
        sys.exit(0)
    sys.exit(main())
