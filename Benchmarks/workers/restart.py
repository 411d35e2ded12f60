#!/usr/bin/python3
"""Restart latency of one service of a running inetinfo host, seen from a client.

    restart.py --socket CONTROL_SOCKET --port HTTP_PORT --crashes N --how kill|throw

For each crash: `kill` sends SIGKILL to the http worker (process isolation; its pid from `status --json`),
`throw` asks the host for `crash http --mode throw` (in-process isolation). Right after, a client sends
`GET /` on a fresh connection until one is answered 200; the latency is from the crash to that answer.
A connection refused is counted (the listening socket is the host's, so there should be none); a
connection reset or closed without an answer (accepted by the instance that was dying) is retried.
Before the next crash the script waits until the new instance runs, then --interval seconds more (crashes
come one at a time, not in a burst: a new spare worker needs about 100 ms to start).
Prints one line of JSON: {"crashes", "p50_ms", "p99_ms", "max_ms", "refused", "retried"}, or with
`--markdown LABEL` one row of a Markdown table.
"""

import argparse
import errno
import json
import os
import signal
import socket
import sys
import time


def control(args, request):
    """One request on the host's control socket (docs/control.md): a JSON line out, a JSON line back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(args.socket)
        s.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        sys.exit(f"host refused {request}: {reply.get('error')}")
    return reply


def status(args):
    return next(s for s in control(args, {"command": "status"})["status"]["services"] if s["name"] == "http")


def wait_running(args, instance, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = status(args)
        if s["state"] == "running" and s["instance"] >= instance:
            return s
        time.sleep(0.005)
    sys.exit(f"http instance {instance} not running after {timeout} s")


def get(port, path):
    """None when answered 200; else the reason."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            return None
        return "no answer" if not data else "status " + data.split(b"\r\n", 1)[0].decode(errors="replace")
    except ConnectionRefusedError:
        return "refused"
    except OSError as error:
        return "reset" if error.errno in (errno.ECONNRESET, errno.EPIPE) else str(error)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/", help="what to GET; it must be answered 200")
    parser.add_argument("--crashes", type=int, default=200)
    parser.add_argument("--how", choices=["kill", "throw"], required=True)
    parser.add_argument("--markdown", metavar="LABEL", help="print a Markdown table row instead of JSON")
    parser.add_argument("--interval", type=float, default=0.3,
                        help="seconds between a restart and the next crash (a spare needs time to start)")
    args = parser.parse_args()
    latencies, refused, retried = [], 0, 0
    current = wait_running(args, 1)
    for _ in range(args.crashes):
        if args.how == "kill":
            start = time.monotonic()
            os.kill(current["pid"], signal.SIGKILL)
        else:
            start = time.monotonic()
            control(args, {"command": "crash", "service": "http", "mode": "throw"})
        while True:
            outcome = get(args.port, args.path)
            if outcome is None:
                break
            if outcome == "refused":
                refused += 1
            elif outcome.startswith("status"):
                sys.exit(f"GET {args.path}: {outcome}")
            else:
                retried += 1
            if time.monotonic() - start > 30:
                sys.exit(f"GET {args.path} not answered 30 s after the crash: {outcome}")
        latencies.append((time.monotonic() - start) * 1000)
        current = wait_running(args, current["instance"] + 1)
        time.sleep(args.interval)
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(len(latencies) * q))], 2)
    result = {"crashes": len(latencies), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
              "max_ms": round(latencies[-1], 2), "refused": refused, "retried": retried}
    if args.markdown:
        print(f"| {args.markdown} | {result['p50_ms']} ms | {result['p99_ms']} ms | {result['max_ms']} ms "
              f"| {refused} | {retried} |")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
