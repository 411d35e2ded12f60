#!/usr/bin/env python3
"""Network clients for scripts/systemd/integration-test.sh (standard library only).

  clients.py smtp-greeting PORT             first line must be 220
  clients.py http-get PORT [PATH]           status must be 200
  clients.py send-mail PORT RCPT            one message through DATA; 250 after the dot
  clients.py ms02-012 PORT                  the 2002 probe: HELO, MAIL, RCPT, BDAT 4, b00m, AUTH LOGIN;
                                            succeeds when the server answers 503 5.5.1 BDAT expected
  clients.py hold SMTP HTTP DIR             opens an SMTP session and a keep-alive HTTP connection, uses
                                            both, writes DIR/ready, waits for DIR/go, uses both again
  clients.py loop SMTP HTTP DIR [MS]        every MS ms (20) opens a connection to each port and reads
                                            the greeting / response, until DIR/stop exists; writes a
                                            JSON summary to DIR/loop.json (refused, dropped, served, …)
  clients.py port-free PORT / free-port     whether 127.0.0.1:PORT can be bound / a free port
Exit status 0 when the check holds, 1 otherwise; what was seen goes to stdout.
"""
import json
import os
import socket
import sys
import threading
import time

HOST = "127.0.0.1"


def connect(port, timeout=10.0):
    return socket.create_connection((HOST, port), timeout=timeout)


class Lines:
    """Reads CRLF-terminated lines from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def line(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """A whole SMTP reply (multi-line replies end with 'NNN ')."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines


def smtp_command(sock, lines, command, expect):
    sock.sendall(command.encode() + b"\r\n")
    reply = lines.reply()
    if not reply[-1].startswith(expect):
        raise RuntimeError(f"{command!r} -> {reply!r}, expected {expect}")
    return reply


def http_request(sock, path="/", keep_alive=True):
    connection = "keep-alive" if keep_alive else "close"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for header in lines[1:]:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        body += chunk
    return status, lines[0]


def smtp_greeting(port):
    with connect(port) as sock:
        lines = Lines(sock)
        greeting = lines.reply()
        print(greeting[-1])
        sock.sendall(b"QUIT\r\n")
        return greeting[-1].startswith("220")


def http_get(port, path="/"):
    with connect(port) as sock:
        status, line = http_request(sock, path, keep_alive=False)
        print(line)
        return status == 200


def send_mail(port, recipient):
    with connect(port) as sock:
        lines = Lines(sock)
        lines.reply()
        smtp_command(sock, lines, "EHLO integration-test", "250")
        smtp_command(sock, lines, "MAIL FROM:<test@localhost>", "250")
        smtp_command(sock, lines, f"RCPT TO:<{recipient}>", "250")
        smtp_command(sock, lines, "DATA", "354")
        body = "Subject: systemd integration test\r\n\r\nDelivered under systemd.\r\n."
        reply = smtp_command(sock, lines, body, "250")
        print(reply[-1])
        smtp_command(sock, lines, "QUIT", "221")
        return True


def ms02_012(port):
    """The detection probe of the time; a patched server answers 503 ... BDAT expected."""
    with connect(port) as sock:
        lines = Lines(sock)
        print("S:", lines.reply()[-1])
        for command in ["HELO probe", "MAIL FROM:<probe@localhost>", "RCPT TO:<postmaster@localhost>"]:
            sock.sendall(command.encode() + b"\r\n")
            print("C:", command)
            print("S:", lines.reply()[-1])
        sock.sendall(b"BDAT 4\r\nb00m")
        print("C: BDAT 4 + b00m")
        print("S:", lines.reply()[-1])
        sock.sendall(b"AUTH LOGIN\r\n")
        print("C: AUTH LOGIN")
        answer = lines.reply()[-1]
        print("S:", answer)
        try:
            sock.sendall(b"QUIT\r\n")
            print("S:", lines.reply()[-1])
        except (OSError, ConnectionError) as error:
            print("after QUIT:", error)
        return answer.startswith("503 5.5.1 BDAT expected")


def hold(smtp_port, http_port, directory):
    """Connections made before a reload must still be served after it."""
    smtp = connect(smtp_port, timeout=30)
    http = connect(http_port, timeout=30)
    lines = Lines(smtp)
    lines.reply()
    smtp_command(smtp, lines, "EHLO before-reload", "250")
    status, _ = http_request(http)
    if status != 200:
        raise RuntimeError(f"HTTP before the reload: {status}")
    open(os.path.join(directory, "ready"), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(directory, "go")):
        if time.time() > deadline or not os.path.isdir(directory):
            raise RuntimeError("never told to go on")
        time.sleep(0.02)
    smtp_command(smtp, lines, "NOOP", "250")
    smtp_command(smtp, lines, "MAIL FROM:<test@localhost>", "250")
    smtp_command(smtp, lines, "RCPT TO:<postmaster@localhost>", "250")
    smtp_command(smtp, lines, "DATA", "354")
    smtp_command(smtp, lines, "Subject: across a reload\r\n\r\nsent on a session opened before the reload\r\n.", "250")
    smtp_command(smtp, lines, "QUIT", "221")
    status, _ = http_request(http)
    if status != 200:
        raise RuntimeError(f"HTTP after the reload, same connection: {status}")
    print("the SMTP session and the keep-alive HTTP connection opened before the reload were served after it")
    return True


def loop(smtp_port, http_port, directory, interval_ms=20):
    """Connects to both ports every interval_ms until DIR/stop; counts refused connections. A port
    given as 0 is not probed.

    Each connection is handled on its own thread so that a connection waiting in the backlog while
    the host restarts does not slow the loop down."""
    counts = {"attempts": 0, "refused": 0, "served": 0, "dropped": 0, "timeouts": 0, "other": 0}
    slowest = {"smtp": 0.0, "http": 0.0}
    examples = []
    lock = threading.Lock()

    def record(kind, what, detail=None, took=None):
        with lock:
            counts[kind] += 1
            if took is not None:
                slowest[what] = max(slowest[what], took)
            if detail and len(examples) < 10:
                examples.append(f"{time.strftime('%H:%M:%S')} {what}: {kind}: {detail}")

    def one(what, port):
        start = time.monotonic()
        try:
            sock = socket.create_connection((HOST, port), timeout=20)
        except ConnectionRefusedError as error:
            record("refused", what, str(error))
            return
        except socket.timeout:
            record("timeouts", what, "connect timed out")
            return
        except OSError as error:
            record("other", what, str(error))
            return
        try:
            with sock:
                if what == "smtp":
                    reply = Lines(sock).reply()[-1]
                    ok = reply.startswith("220")
                    sock.sendall(b"QUIT\r\n")
                else:
                    status, reply = http_request(sock, keep_alive=False)
                    ok = status == 200
            if ok:
                record("served", what, took=time.monotonic() - start)
            else:
                record("other", what, reply)
        except socket.timeout:
            record("timeouts", what, "no answer within 20 s")
        except (OSError, ConnectionError) as error:
            # Accepted by a host that then died (trap, watchdog kill): not refused, but not served.
            record("dropped", what, str(error))

    threads = []
    stop = os.path.join(directory, "stop")
    started = time.monotonic()
    # Also ends if the directory goes away or after 5 minutes: never outlive the test that started it.
    while not os.path.exists(stop) and os.path.isdir(directory) and time.monotonic() - started < 300:
        for what, port in (("smtp", smtp_port), ("http", http_port)):
            if port == 0:
                continue  # that port is not probed in this run
            with lock:
                counts["attempts"] += 1
            thread = threading.Thread(target=one, args=(what, port), daemon=True)
            thread.start()
            threads.append(thread)
        threads = [t for t in threads if t.is_alive()]
        time.sleep(interval_ms / 1000)
    for thread in threads:
        thread.join(timeout=25)
    summary = dict(counts, seconds=round(time.monotonic() - started, 1),
                   slowestMs={k: round(v * 1000) for k, v in slowest.items()}, examples=examples)
    if os.path.isdir(directory):
        with open(os.path.join(directory, "loop.json"), "w") as out:
            json.dump(summary, out)
    print(json.dumps(summary))
    return counts["refused"] == 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    command, args = argv[1], argv[2:]
    try:
        if command == "smtp-greeting":
            ok = smtp_greeting(int(args[0]))
        elif command == "http-get":
            ok = http_get(int(args[0]), *(args[1:2] or ["/"]))
        elif command == "send-mail":
            ok = send_mail(int(args[0]), args[1])
        elif command == "ms02-012":
            ok = ms02_012(int(args[0]))
        elif command == "hold":
            ok = hold(int(args[0]), int(args[1]), args[2])
        elif command == "loop":
            ok = loop(int(args[0]), int(args[1]), args[2], int(args[3]) if len(args) > 3 else 20)
        elif command == "free-port":
            with socket.socket() as sock:
                sock.bind((HOST, 0))
                print(sock.getsockname()[1])
            ok = True
        elif command == "port-free":
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as systemd binds
                try:
                    sock.bind((HOST, int(args[0])))
                    ok = True
                except OSError:
                    ok = False
        else:
            print(__doc__)
            return 2
    except Exception as error:  # report any failure as a failed check
        print(f"{command}: {type(error).__name__}: {error}")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
