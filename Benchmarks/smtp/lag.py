#!/usr/bin/python3
"""Time from a message's 250 to its file in new/ (smtp.commit = journal delivers behind the 250).

    lag.py -m MESSAGES -l OCTETS -t RCPT MAILDIR HOST:PORT   → one JSON line: {"sent", "p50_ms", "p99_ms", "max_ms"}

One session sends MESSAGES messages of OCTETS octets to RCPT, one after another, and notes when each 250
(which names the queue id, "as <M...>") arrives; a thread watches MAILDIR/new with inotify (created or
moved-in names carry the id) and notes when each file appears. A file that appears before its 250 (the
direct way) counts as 0. Run it beside a load (Benchmarks/smtp/run.sh runs smtp-source next to it).
"""
import argparse, ctypes, json, os, re, socket, struct, threading, time

parser = argparse.ArgumentParser()
parser.add_argument("-m", type=int, default=300)
parser.add_argument("-l", type=int, default=4096)
parser.add_argument("-t", required=True)
parser.add_argument("maildir")
parser.add_argument("target")
args = parser.parse_args()

libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
new = os.path.join(args.maildir, "new")
os.makedirs(new, exist_ok=True)  # the host creates the Maildir itself otherwise; watching needs it now
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, new.encode(), IN_CREATE | IN_MOVED_TO) < 0:
    raise SystemExit("inotify: errno %d" % ctypes.get_errno())
appeared = {}
done = threading.Event()

def watch():
    while not done.is_set():
        data = os.read(fd, 65536)
        now = time.monotonic()
        offset = 0
        while offset < len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
            offset += 16 + length
            match = re.search(r"\.(M\d+P\d+Q\d+)\.", name)
            if match:
                appeared.setdefault(match.group(1), now)

threading.Thread(target=watch, daemon=True).start()

host, port = args.target.rsplit(":", 1)
s = socket.create_connection((host, int(port)))
f = s.makefile("rb")

def reply():
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("connection closed")
        if line[3:4] != b"-":
            return line.decode(errors="replace")

reply()
s.sendall(b"EHLO lag.test\r\n"); reply()
body = b"Subject: lag\r\n\r\n" + b"x" * max(0, args.l - 18) + b"\r\n"
acked = {}
for n in range(args.m):
    s.sendall(b"MAIL FROM:<lag@localhost>\r\nRCPT TO:<%s>\r\nDATA\r\n" % args.t.encode())
    for _ in range(3):
        reply()
    s.sendall(body + b".\r\n")
    line = reply()
    now = time.monotonic()
    match = re.search(r"as <?(M\d+P\d+Q\d+)", line)
    if not line.startswith("250") or not match:
        raise SystemExit("unexpected reply: " + line)
    acked[match.group(1)] = now
s.sendall(b"QUIT\r\n")
deadline = time.monotonic() + 10
while time.monotonic() < deadline and any(i not in appeared for i in acked):
    time.sleep(0.01)
missing = [i for i in acked if i not in appeared]
lags = sorted(max(0.0, appeared[i] - acked[i]) * 1000 for i in acked if i in appeared)
pick = lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))], 2) if lags else None
print(json.dumps({"sent": len(acked), "missing": len(missing), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}))
done.set()
