#!/usr/bin/env python3
"""Writes the hand-made seed corpora of the HTTP, control and configuration fuzzers (Fuzz/corpus/*).
Regression seeds (regression-*) are added by hand beside them and are not touched here."""
import os, struct

here = os.path.dirname(os.path.abspath(__file__))

def write(corpus, name, data):
    d = os.path.join(here, "corpus", corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# --- http-request: byte 0 = flags (low 4 bits: read size index, 0x0f whole; 0x10 access log;
# 0x20 idle at the end; 0x40 unwritable channel; 0x80 varying reads); 0xFE 0xFE = pause until timers fire.
WHOLE, ONE, SEVEN = 0x0F, 0x00, 0x04
def req(path, *headers, method="GET", version="HTTP/1.1", body=b""):
    lines = [f"{method} {path} {version}", "Host: fuzz"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

ETAG = '"2ebc98a10-6"'  # a.txt: 6 bytes, modified Sun, 06 Nov 1994 08:49:37 GMT
IMF, RFC850, ASCTIME = "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"
http = {
    "get-index": bytes([WHOLE | 0x10]) + req("/"),
    "head-file": bytes([WHOLE]) + req("/a.txt", method="HEAD"),
    "pipelined": bytes([SEVEN]) + req("/a.txt") + req("/big.bin", method="HEAD") + req("/missing") + req("/style.css", "Connection: close"),
    "pipelined-bytewise": bytes([ONE | 0x10]) + req("/a.txt") + req("/sub/", method="HEAD") + req("/empty.txt"),
    "pipelined-unwritable": bytes([WHOLE | 0x40]) + req("/a.txt") + req("/medium.bin") + req("/big.bin", "Range: bytes=10-20") + req("/index.html"),
    "if-modified-since-imf": bytes([WHOLE]) + req("/a.txt", f"If-Modified-Since: {IMF}"),
    "if-modified-since-rfc850": bytes([WHOLE]) + req("/a.txt", f"If-Modified-Since: {RFC850}"),
    "if-modified-since-asctime": bytes([WHOLE]) + req("/a.txt", f"If-Modified-Since: {ASCTIME}"),
    "if-range-imf": bytes([WHOLE]) + req("/a.txt", "Range: bytes=1-3", f"If-Range: {IMF}"),
    "if-range-rfc850": bytes([WHOLE]) + req("/big.bin", "Range: bytes=70000-", f"If-Range: {RFC850}"),
    "if-range-asctime": bytes([WHOLE]) + req("/a.txt", "Range: bytes=-2", f"If-Range: {ASCTIME}"),
    "if-range-etag": bytes([WHOLE]) + req("/a.txt", "Range: bytes=0-0", f"If-Range: {ETAG}") + req("/a.txt", "Range: bytes=0-0", f"If-Range: W/{ETAG}"),
    "if-none-match": bytes([WHOLE]) + req("/a.txt", f"If-None-Match: {ETAG}") + req("/a.txt", f"If-None-Match: W/{ETAG}, \"x\"")
        + req("/a.txt", "If-None-Match: *", f"If-Modified-Since: {IMF}") + req("/a.txt", 'If-None-Match: "other"'),
    "ranges": bytes([WHOLE]) + req("/a.txt", "Range: bytes=0-0") + req("/a.txt", "Range: bytes=-3") + req("/a.txt", "Range: bytes=2-")
        + req("/a.txt", "Range: bytes=1-999") + req("/a.txt", "Range: bytes=0-1,3-4") + req("/a.txt", "Range: items=0-1"),
    "ranges-unsatisfiable": bytes([WHOLE]) + req("/a.txt", "Range: bytes=6-") + req("/empty.txt", "Range: bytes=-1") + req("/a.txt", "Range: bytes=5-2"),
    "range-big-file": bytes([WHOLE | 0x80]) + req("/big.bin", "Range: bytes=1000-70000") + req("/big.bin", "Range: bytes=-100") + req("/big.bin"),
    "paths-encoded": bytes([WHOLE]) + req("/sp%20ace.txt") + req("/%C3%BCber.txt") + req("/a.txt?x=1&y=%zz") + req("/%61.txt"),
    "paths-dot-segments": bytes([WHOLE]) + req("/sub/../a.txt") + req("/./a.txt") + req("//a.txt") + req("/sub/./page.html") + req("/%2e%2e/outside/secret.txt"),
    "paths-escape": bytes([WHOLE]) + req("/link-out.txt") + req("/dir-out/secret.txt") + req("/dir-out/") + req("/sub/up/a.txt") + req("/sub/up/dir-out/index.html"),
    "paths-bad": bytes([WHOLE]) + req("/%zz") + req("/a.txt%00") + req("/..%2fetc") + req("/..%5c") + req("/%C3%28") + req("a.txt") + req("http://fuzz/a.txt"),
    "paths-directories": bytes([WHOLE]) + req("/sub") + req("/sub/") + req("/noindex/") + req("/noindex") + req("/link-in.txt") + req("/dangling"),
    "methods": bytes([WHOLE]) + req("/a.txt", "Content-Length: 5", method="POST", body=b"hello") + req("/", method="DELETE") + req("*", method="OPTIONS") + req("/a.txt"),
    "body-too-large": bytes([SEVEN]) + req("/a.txt", "Content-Length: 200", method="POST", body=b"x" * 200) + req("/a.txt"),
    "body-chunked": bytes([SEVEN]) + req("/a.txt", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n") + req("/a.txt", "Transfer-Encoding: chunked", body=b"ff\r\n" + b"y" * 255 + b"\r\n0\r\n\r\n"),
    "http10": bytes([WHOLE]) + req("/a.txt", version="HTTP/1.0") + req("/a.txt", "Connection: keep-alive", version="HTTP/1.0"),
    "http10-keepalive": bytes([WHOLE]) + req("/a.txt", "Connection: keep-alive", version="HTTP/1.0") + req("/sub", "Connection: keep-alive", version="HTTP/1.0"),
    "malformed": bytes([WHOLE]) + b"GARBAGE\r\n\r\n",
    "malformed-header": bytes([WHOLE]) + req("/a.txt") + b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    "uri-too-long": bytes([WHOLE]) + req("/" + "a" * 1100) + req("/a.txt"),
    "headers-too-large": bytes([WHOLE]) + req("/a.txt", "X-Big: " + "b" * 2100),
    "too-many-headers": bytes([WHOLE]) + req("/a.txt", *[f"X-{i}: {i}" for i in range(25)]),
    "expect-continue": bytes([WHOLE]) + req("/a.txt", "Expect: 100-continue", "Content-Length: 3", method="PUT", body=b"abc"),
    "timeout-head": bytes([SEVEN]) + b"GET /a.txt HTTP/1.1\r\nHo" + b"\xfe\xfe" + b"st: x\r\n\r\n",
    "timeout-idle": bytes([WHOLE | 0x20]) + req("/a.txt") + b"\xfe\xfe" + req("/a.txt"),
    "timeout-pipelined": bytes([WHOLE]) + req("/big.bin") + req("/a.txt") + b"GET /a" + b"\xfe\xfe" + b".txt HTTP/1.1\r\n\r\n",
    "bare-lf": bytes([WHOLE]) + b"GET /a.txt HTTP/1.1\nHost: x\n\n",
    "duplicate-content-length": bytes([WHOLE]) + req("/a.txt", "Content-Length: 1", "Content-Length: 2", body=b"xy"),
}
for name, data in http.items():
    write("http-request", name, data)

# --- http-fields: byte 0 selects the size (0-7 as in the fuzzer; 0x80: the time bytes as they are),
# 8 bytes of modification time / size, then lines.
def fields(selector, raw, *lines):
    return bytes([selector]) + struct.pack("<q", raw) + "\n".join(lines).encode()
fields_seeds = {
    "dates-three-forms": fields(2, 0, IMF, RFC850, ASCTIME),
    "dates-edges": fields(2, 0, "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:60 GMT", "Mon, 29 Feb 2021 12:00:00 GMT",
                          "Tuesday, 01-Jan-69 00:00:00 GMT", "Wed Dec 31 23:59:59 0000"),
    "dates-malformed": fields(2, 0, "Sun, 06 Nov 99999999999 08:49:37 GMT", "Sun, 6 Nov 1994 8:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC",
                              "Sun,06 Nov 1994 08:49:37 GMT", "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun Nov 06 24:00:00 1994"),
    "ranges-small": fields(2, 0, "bytes=0-0", "bytes=-3", "bytes=2-", "bytes=1-999", "bytes=6-", "bytes= 1 - 2 "),
    "ranges-odd": fields(0, 0, "bytes=-0", "bytes=0-", "BYTES=0-1", "bytes=0-1,2-3", "bytes=--1", "bytes=1-0", "bytes=999999999999999999-"),
    "ranges-huge": fields(4, 0, "bytes=-999999999999999999", "bytes=999999999999999998-999999999999999999", "bytes=0-9223372036854775807"),
    "ranges-size-from-input": fields(7, 0x7FFF_FFFF_FFFF_FFF0, "bytes=9223372036854775800-", "bytes=-1"),
    "validators-etag": fields(2, 0, f"If-None-Match: {ETAG}", f"If-Range: {ETAG}"),
    "validators-weak-list": fields(2, 0, f"If-None-Match: W/{ETAG}, \"a\", *", "If-Range: W/\"x\""),
    "validators-dates": fields(2, 0, f"If-Modified-Since: {IMF}", f"If-Range: {RFC850}"),
    "validators-raw-time": fields(0x82, -62135596800, f"If-Modified-Since: {ASCTIME}", "If-Range: Sat, 01 Jan 0000 00:00:00 GMT"),
    "validators-huge-time": fields(0x85, 0x7FFF_FFFF_FFFF_FFFF, "If-Modified-Since: Fri, 31 Dec 9999 23:59:59 GMT"),
    "unicode": fields(3, 0, "bytes=\u0661-\u0662", "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT", "Sun\u00a0Nov  6 08:49:37 1994"),
}
for name, data in fields_seeds.items():
    write("http-fields", name, data)

# --- control-request: byte 0 = read size - 1 (low 6 bits); then request lines.
def control(size, *lines, end="\n"):
    return bytes([size]) + (end.join(lines) + end).encode()
control_seeds = {
    "status": control(63, '{"command":"status"}'),
    "each-command": control(5, *[f'{{"command":"{c}","service":"http"}}' for c in ["start", "stop", "restart", "reload", "status"]]),
    "crash": control(63, '{"command":"crash","service":"host","mode":"trap"}', '{"command":"crash","service":"smtp","mode":"hang"}'),
    "events-follow": control(63, '{"command":"events","follow":true}'),
    "crlf": control(0, '{"command":"status"}', '{"command":"stop","service":"smtp"}', end="\r\n"),
    "malformed": control(63, '{"command":"explode"}', '{"command":1}', '{', '[]', 'null', '', '{"follow":"yes","command":"events"}'),
    "unicode-escapes": control(63, '{"command":"status","service":"\\u0000\\ud800\\u00fc","mode":"\\n"}'),
    "duplicate-keys": control(63, '{"command":"status","command":"stop","service":1e400}'),
    "numbers": control(63, '{"command":"events","follow":true,"extra":-0.0e-999999,"n":123456789012345678901234567890}'),
    "nested": control(63, '{"command":"status","x":' + "[" * 200 + "]" * 200 + "}"),
    "reply-status": control(63, '{"ok":true,"status":{"host":{"pid":1,"uptimeSeconds":1.5,"isolation":"isolated","watchdogUsec":null,'
                            '"faultInjection":false,"degraded":false,"supervisorProblem":null},"services":[{"name":"http","state":"running",'
                            '"instance":1,"restarts":0,"since":"2026-11-29T04:24:21.123Z","listen":["127.0.0.1:8080"],'
                            '"lastFailure":{"reason":"boom","at":"2026-11-29T04:24:21Z"},"enabled":true}]}}'),
    "reply-event": control(63, '{"ok":true,"event":{"time":"2026-11-29T04:24:21.123+0100","offsetMs":5,"service":"smtp","instance":2,'
                           '"from":"running","to":"backoff","reason":"x"}}'),
    "reply-dates": control(63, *[f'{{"ok":true,"event":{{"time":"{d}","offsetMs":0,"service":"s","instance":0,"from":"a","to":"b","reason":"r"}}}}'
                                 for d in ["0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "2026-02-30T25:61:61Z", "20261129T042421Z",
                                           "2026-11-29T04:24:21.1234567890123Z", "-2026-11-29T04:24:21Z", "2026-11-29"]]),
    "reply-failure": control(63, '{"ok":false,"error":"no such service: ftp"}'),
    "unterminated": bytes([63]) + b'{"command":"status"}',
}
for name, data in control_seeds.items():
    write("control-request", name, data)

# --- configuration: TOML, then NUL-separated --set assignments.
with open(os.path.join(here, "..", "config", "inetinfo.toml"), "rb") as f:
    shipped = f.read()
config_seeds = {
    "shipped": shipped,
    "shipped-with-sets": shipped + b"\0http.max-connections=5\0smtp.enabled=false\0supervisor.restart-window=0.5",
    "every-host-key": b'[host]\nisolation = "shared"\nstate-dir = "/tmp/x"\ncontrol-socket = "/tmp/x.sock"\nfault-injection = true\nlog-level = "debug"\n',
    "supervision": b'[supervisor]\nrestart-policy = "always"\nmax-restarts = 0\nrestart-window = 604800\non-max-restarts = "escalate"\n'
                   b'backoff-initial = 10\nbackoff-max = 5\nstable-period = 0.001\nliveness-interval = 1\nliveness-timeout = 3600000\n'
                   b'startup-timeout = 1\nshutdown-timeout = 0\nmax-abandoned = 1000\n[http]\nrestart-policy = "never"\nmax-restarts = 1000000\n',
    "http-keys": b'[http]\nweb-root = "/tmp"\nkeepalive-timeout = 86400\nheader-timeout = 1\nmax-request-line = 64\nmax-header-size = 256\n'
                 b'max-headers = 10000\nmax-body-size = 0\naccess-log = "off"\nfile-cache-size = 17179869184\nlisten = ["127.0.0.1:1", "[::1]:2"]\nthreads = 256\n',
    "smtp-keys": b'[smtp]\ndomains = ["example.org", "localhost"]\nmax-message-size = 1\nrecipients = "existing"\ndelivery = "discard"\n'
                 b'simulate-ms02-012 = true\nenabled = false\n',
    "numbers": b'[supervisor]\nrestart-window = inf\nstable-period = nan\nmax-restarts = 9223372036854775807\n[http]\nthreads = -1\nmax-body-size = 1e400\n',
    "types": b'[host]\nlog-level = 1979-05-27T07:32:00Z\n',
    "inline-and-dotted": b'http = { enabled = true, "max-connections" = 3 }\nsmtp.listen = "0.0.0.0:25"\n"supervisor"."max-restarts" = 1\n',
    "arrays": b'[http]\nlisten = [1, 2.5, true, [3], {a = 1}]\n[smtp]\ndomains = []\n',
    "unknown-keys": b'[ftp]\nenabled = true\n[host.deep.er]\nx = 1\n',
    "sets-only": b'\0host.isolation=shared\0http.listen= 127.0.0.1:9 , [::1]:9 \0=x\0novalue\0smtp.domains=a..b\0http.web-root=',
    "malformed-toml": b'[http\nweb-root = "unterminated\n[[smtp]]\nx = """\n',
    "tables-arrays": b'[[http]]\nenabled = true\n[[http]]\nenabled = false\n',
    "escapes": b'[http]\nweb-root = "\\u0000/tmp\\t"\naccess-log = \'/dev/null\'\n',
}
for name, data in config_seeds.items():
    write("configuration", name, data)

# --- flight-recording: a flight recorder's file (Sources/Supervision/FlightRecorder.swift's layout),
# two slots; the fuzzer parses it as the host does after a crash.
def flight(slots, service=b"smtp", slot_count=2):
    header = struct.pack("<QIIIiiiqq", 0x3130_5244_4C46_4E49, 1, slot_count, 128 + 4096, 4242, 4200, 0, 3, 1764730000000)
    header = header[:48] + bytes([len(service)]) + service
    out = header.ljust(128, b"\0")
    for state, processing, data, total, peer in slots:
        ring = bytearray(4096)
        start = (total - len(data)) % 4096
        for i, b in enumerate(data):
            ring[(start + i) % 4096] = b
        meta = struct.pack("<IIQQqq", state, processing, total, 100, 1764730000000, 1764730001000)
        meta += bytes([len(peer)]) + peer
        out += meta.ljust(128, b"\0") + bytes(ring)
    return out

probe = b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n"
write("flight-recording", "ms02-012-suspect", flight([(1, 1, probe, len(probe), b"127.0.0.2:40000"), (1, 0, b"GET / HTTP/1.1\r\n", 16, b"[::1]:8080")]))
wrapped = bytes((i * 7) % 256 for i in range(5000))
write("flight-recording", "wrapped-ring", flight([(1, 0, wrapped[-4096:], 5000, b"127.0.0.3:1"), (0, 0, b"", 0, b"")]))
write("flight-recording", "truncated", flight([(1, 1, probe, len(probe), b"127.0.0.2:40000")], slot_count=9)[:3000])
write("flight-recording", "bad-counts", flight([(1, 1, b"x", 2**64 - 1, b"\xff" * 79), (7, 9, b"", 3, b"")]))

# --- figure-file: the first slots of a worker's figure file (Sources/InetinfoHost/Metrics/FigureFile.swift's
# layout: a 64-byte header, then 512-byte slots); the fuzzer zero-fills the rest and takes it in as the host does.
def figures(slots):
    out = struct.pack("<Qi", 0x3147_4946_5445_4E49, 4242).ljust(64, b"\0")
    for kind, key, value, counts, sums in slots:
        slot = struct.pack("<II", kind, len(key)) + key.ljust(200, b"\0") + struct.pack("<Q", value)
        slot += b"".join(struct.pack("<Q", c) for c in (counts + [0] * 15)[:15])
        slot += b"".join(struct.pack("<Q", c) for c in (sums + [0] * 15)[:15])
        out += slot.ljust(512, b"\0")
    return out

write("figure-file", "http-worker", figures([
    (1, b"inetinfo_http_requests_total\tmethod=GET\tcode=2xx", 41, [], []),
    (1, b"inetinfo_http_requests_total\tmethod=GET\tcode=4xx", 5, [], []),
    (2, b"inetinfo_http_connections_open", struct.unpack("<Q", struct.pack("<d", 3.0))[0], [], []),
    (3, b"inetinfo_http_request_duration_seconds", 0, [30, 11, 2], [9_000_000, 11_000_000, 4_000_000]),
]))
write("figure-file", "hostile", figures([
    (1, b"inetinfo_http_requests_total\tmethod=G\x01T\tcode=2xx", 1, [], []),
    (1, b"inetinfo_http_requests_total\tcode=2xx\tcode=4xx", 2**64 - 1, [], []),
    (1, b"\tmethod=GET", 3, [], []),
    (2, b"inetinfo_smtp_sessions_open", struct.unpack("<Q", struct.pack("<d", float("nan")))[0], [], []),
    (3, b"inetinfo_smtp_delivery_duration_seconds", 0, [2**63] * 15, [2**64 - 1] * 15),
    (9, b"inetinfo_smtp_messages_accepted_total", 7, [], []),
    (1, b"inetinfo_smtp_messages_accepted_total", 7, [], []),
]))
write("figure-file", "header-only", figures([]))

# --- journal-record: a journal's head (checkpoint slots) or one record
# (Sources/SMTPService/Journal/JournalFormat.swift).
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def slot(epoch, seq, offset, size):
    body = struct.pack("<IIQQQQ", 0x31434A49, 0, epoch, seq, offset, size)
    return body + struct.pack("<I", crc32c(body))

def record(kind, epoch, seq, name, mailboxes, content):
    meta = b""
    if kind == 1:
        meta = struct.pack("<H", len(name)) + name + struct.pack("<H", len(mailboxes))
        for m in mailboxes:
            meta += struct.pack("<H", len(m)) + m
    head = struct.pack("<IIQQIIQI", 0x31524A49, kind, epoch, seq, len(meta), 0, len(content), crc32c(content))
    return head + struct.pack("<I", crc32c(meta, crc32c(head))) + meta + content

assert crc32c(b"123456789") == 0xE3069283
write("journal-record", "head", slot(1, 1, 4096, 1 << 20) + b"\0" * (512 - 44) + slot(2, 7, 8192, 1 << 20))
write("journal-record", "head-torn-slot", slot(3, 1, 4096, 1 << 20)[:30] + b"\0" * 482 + slot(2, 7, 8192, 1 << 20))
write("journal-record", "message", record(1, 2, 7, b"1796292053.M867042P30404Q1.vm", [b"localhost/bob", b"localhost/carol"],
                                         b"Subject: x\r\n\r\nhello\r\n"))
write("journal-record", "wrap", record(2, 2, 8, b"", [], b""))
write("journal-record", "unsafe-path", record(1, 2, 9, b"1.M1P1Q1.vm", [b"../etc"], b"x"))
