#!/usr/bin/python3
"""BDAT load generator for the SMTP benchmark (no packaged client sends BDAT).

    bdat_load.py -s SESSIONS -m MESSAGES -l SIZE [-t RCPT] [-f FROM] HOST:PORT

Opens SESSIONS connections at once; they share MESSAGES messages. Each session says EHLO once, checks
that PIPELINING and CHUNKING are advertised, then for every message writes MAIL FROM, RCPT TO and
`BDAT <n> LAST` followed by the whole content in ONE write (RFC 2920 pipelining, RFC 3030 chunking) and
reads the three replies, which must be 250. Content is SIZE octets of body plus a few header lines.
Prints one line of JSON: {"sent": accepted messages, "failed": refused ones, "seconds": ..., "rate": ...,
"errors": [the first distinct unexpected replies]} and exits 1 if any message was not accepted.
"""

import argparse
import asyncio
import json
import sys
import time


def make_content(size):
    header = (b"From: <bench@localhost>\r\nTo: <user@localhost>\r\nSubject: bdat benchmark\r\n"
              b"Message-ID: <bdat-bench@localhost>\r\n\r\n")
    line = b"La de da de da 1. La de da de da 2. La de da de da 3. La de da de da 4.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return header + body


async def read_reply(reader):
    """One (possibly multi-line) reply: (code, text)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by server" + (": " + lines[-1] if lines else ""))
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return int(text[:3]) if text[:3].isdigit() else 0, "\n".join(lines)


class Load:
    def __init__(self, total):
        self.remaining = total
        self.sent = 0
        self.failed = 0
        self.errors = []

    def take(self):
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def error(self, text):
        self.failed += 1
        if len(self.errors) < 10 and text not in self.errors:
            self.errors.append(text)


async def session(host, port, load, command, content):
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        code, text = await read_reply(reader)
        if code != 220:
            load.error("greeting: " + text)
            return
        writer.write(b"EHLO bdat-load.localdomain\r\n")
        code, text = await read_reply(reader)
        upper = text.upper()
        if code != 250 or "PIPELINING" not in upper or "CHUNKING" not in upper:
            load.error("EHLO: " + text)
            return
        while load.take():
            writer.write(command + content)
            replies = [await read_reply(reader) for _ in range(3)]
            if all(code == 250 for code, _ in replies):
                load.sent += 1
            else:
                load.error(" | ".join(text for _, text in replies))
                writer.write(b"RSET\r\n")
                await read_reply(reader)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await read_reply(reader)
    except (ConnectionError, OSError, ValueError) as error:
        load.error("session: %s" % error)
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-s", type=int, default=1, help="sessions in parallel")
    parser.add_argument("-m", type=int, default=1, help="messages in all")
    parser.add_argument("-l", type=int, default=1024, help="body size in octets")
    parser.add_argument("-f", default="bench@localhost")
    parser.add_argument("-t", default="user@localhost")
    parser.add_argument("server", help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.server.rpartition(":")
    content = make_content(args.l)
    command = ("MAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n"
               % (args.f, len(content), args.t, len(content))).encode()
    load = Load(args.m)
    start = time.monotonic()
    await asyncio.gather(*(session(host, int(port), load, command, content) for _ in range(args.s)))
    seconds = time.monotonic() - start
    print(json.dumps({"sent": load.sent, "failed": load.failed, "seconds": round(seconds, 3),
                      "rate": round(load.sent / seconds, 1) if seconds > 0 else 0, "errors": load.errors}))
    return 0 if load.failed == 0 and load.sent == args.m else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
