#!/usr/bin/python3
"""The aiosmtpd peer of the SMTP benchmark: delivers each message to a Maildir before replying 250.

    maildir_server.py --listen 127.0.0.1:PORT --root DIR [--mode maildir|discard] [--inline]

maildir (default): for every recipient `local@domain` the content is written to
DIR/<domain>/<local>/tmp/<unique>, fsync'ed, hard-linked into new/, new/ is fsync'ed, the tmp/ name is
removed, and only then is 250 returned -- the same durability contract as inetinfo's Maildir delivery.
The blocking file work runs in a thread pool (run_in_executor), so that concurrent sessions' fsyncs overlap
as they do in inetinfo's commit pool; --inline does it on the event loop instead (one fsync at a time).

discard: reply 250 without touching the disk.

Uses Debian's python3-aiosmtpd, so run it with /usr/bin/python3.
"""

import argparse
import asyncio
import concurrent.futures
import itertools
import os
import socket
import time

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    def __init__(self, root, mode, inline):
        self.root = root
        self.mode = mode
        self.inline = inline
        self.counter = itertools.count(1)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=32)
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.prepared = set()

    def _maildir(self, recipient):
        local, _, domain = recipient.rpartition("@")
        path = os.path.join(self.root, domain.lower(), local)
        if path not in self.prepared:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
            self.prepared.add(path)
        return path

    def _deliver(self, recipients, content):
        now = time.time()
        name = "%d.M%dP%dQ%d.%s" % (int(now), int((now % 1) * 1e6), os.getpid(), next(self.counter), self.host)
        boxes = sorted({self._maildir(r) for r in recipients})
        tmp = os.path.join(boxes[0], "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(content)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            for box in boxes:
                os.link(tmp, os.path.join(box, "new", name))
                dfd = os.open(os.path.join(box, "new"), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        finally:
            os.unlink(tmp)

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "discard":
            return "250 2.0.0 OK"
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        header = ("Return-Path: <%s>\r\n" % envelope.mail_from).encode()
        try:
            if self.inline:
                self._deliver(envelope.rcpt_tos, header + content)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    self.pool, self._deliver, envelope.rcpt_tos, header + content)
        except OSError as error:
            return "451 4.3.0 Local storage error: %s" % error.strerror
        return "250 2.0.0 Message accepted for delivery"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--root", default=".")
    parser.add_argument("--mode", choices=("maildir", "discard"), default="maildir")
    parser.add_argument("--inline", action="store_true", help="fsync on the event loop, not in a thread pool")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    handler = MaildirHandler(args.root, args.mode, args.inline)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, decode_data=False, hostname="aiosmtpd-bench", ident="aiosmtpd bench"),
        host=host, port=int(port), backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
