#!/usr/bin/python3
"""blockfs: a disk with a volatile write cache and no ordering, as one file, for a real file system on it.

powerfs.py models a file system (ext4 without a journal, pessimistically) and checks the per-file fsyncs;
it cannot check `syncfs(2)`, which never reaches a FUSE file system. blockfs models the layer below:
the mount holds one file, `disk`, meant to back a loop device (`mount -o loop MOUNT/disk DIR`) carrying
a real kernel file system (ext4 in the tests). The loop driver turns the file system's writes into
writes of `disk` and its cache flushes (REQ_PREFLUSH, FUA) into fsyncs of `disk`, so the model sees
exactly what a disk sees, whichever of fsync, fdatasync or syncfs the program above used:

  * a write goes into the cache; a flush (fsync/fdatasync of `disk`) makes everything written before it
    durable;
  * at a cut, each 4 KiB block written since the last flush survives or not, at random and independently
    (a cache that writes back in any order), with the probability given by --keep (0.5).

Control: the file `.powerloss` at the root, as in powerfs: one command per line written to it, `key value`
status lines read from it.

    cut                     cut the power now: every later read, write and flush of `disk` fails (EIO)
    on                      power on after a cut: the unflushed blocks are kept or lost (see above);
                            disarms (refused, EINVAL, while the power is on)
    arm after flush K       cut right after the K-th flush from now has returned success
    arm after write K       cut right after the K-th write from now (in the middle of a write-back)
    disarm                  forget the armed trigger
    victim PID              SIGKILL PID at the moment of the cut (the host dies with the power)

Status: `power on|off`, `cuts N`, `cause TEXT`, `armed TEXT|-`, `count.write N`, `count.flush N`,
`lost.blocks N` and `kept.blocks N` (unflushed blocks dropped and kept at the last power on), `seed N`
(of the random choices: pass it back with --seed to repeat them).

Run: blockfs.py MOUNTPOINT --size BYTES [--keep P] [--seed N] [--inner DIR] [--watch-pid PID]
[--lifetime SECONDS]. Foreground; SIGTERM unmounts. With --watch-pid it unmounts when that process is
gone, with --lifetime after that many seconds whatever happens; `--inner DIR` (the file system mounted
from `disk`) is lazily unmounted first, so a test that dies leaves no mount behind for long.
Requires python3-fusepy and root.
"""

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

BLOCK = 4096
DISK = "/disk"
CONTROL = "/.powerloss"


class BlockFS(Operations):
    use_ns = False

    def __init__(self, size, keep, seed):
        self.size = size
        self.keep = keep
        self.seed = seed if seed is not None else random.randrange(1 << 32)
        self.random = random.Random(self.seed)
        self.live = {}  # block index -> bytes (BLOCK long); absent: zeros
        self.durable = {}
        self.dirty = set()  # blocks written since the last flush
        self.power = True
        self.cuts = 0
        self.cause = "-"
        self.armed = None  # (operation, how many more before the cut)
        self.victim = None
        self.counts = {"write": 0, "flush": 0}
        self.last = {"lost": 0, "kept": 0}
        self.control_out = {}
        self.next_fh = 1
        self.now = time.time()

    # ----------------------------------------------------------------- power

    def _cut(self, cause):
        self.power = False
        self.cuts += 1
        self.cause = cause
        self.armed = None
        if self.victim:
            try:
                os.kill(self.victim, signal.SIGKILL)
            except OSError:
                pass
            self.victim = None

    def _power_on(self):
        lost = kept = 0
        for index in self.dirty:
            if self.random.random() < self.keep:
                kept += 1
                self.durable[index] = self.live[index]
            else:
                lost += 1
        self.live = dict(self.durable)
        self.dirty = set()
        self.last = {"lost": lost, "kept": kept}
        self.armed = None
        self.power = True

    def _status(self):
        lines = ["power %s" % ("on" if self.power else "off"), "cuts %d" % self.cuts, "cause %s" % self.cause,
                 "armed %s" % ("-" if self.armed is None else "after %s %d" % self.armed),
                 "count.write %d" % self.counts["write"], "count.flush %d" % self.counts["flush"],
                 "lost.blocks %d" % self.last["lost"], "kept.blocks %d" % self.last["kept"], "seed %d" % self.seed]
        return ("\n".join(lines) + "\n").encode()

    def _command(self, line):
        words = line.split()
        if not words:
            return
        if words == ["cut"]:
            if self.power:
                self._cut("cut command")
        elif words == ["on"]:
            # Only after a cut: under a mounted file system it would drop writes the kernel saw succeed.
            if self.power:
                raise FuseOSError(errno.EINVAL)
            self._power_on()
        elif len(words) == 4 and words[:2] == ["arm", "after"] and words[2] in ("flush", "write") and int(words[3]) >= 1:
            self.armed = (words[2], int(words[3]))
        elif words == ["disarm"]:
            self.armed = None
        elif len(words) == 2 and words[0] == "victim":
            self.victim = int(words[1])
        else:
            raise FuseOSError(errno.EINVAL)

    # ----------------------------------------------------------------- the tree: /, /disk, /.powerloss

    def getattr(self, path, fh=None):
        base = {"st_uid": 0, "st_gid": 0, "st_atime": self.now, "st_mtime": self.now, "st_ctime": self.now}
        if path == "/":
            return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ino=1)
        if path == DISK:
            return dict(base, st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=self.size, st_ino=2)
        if path == CONTROL:
            return dict(base, st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=0, st_ino=3)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", DISK[1:], CONTROL[1:]]

    def open(self, path, flags):
        if path not in (DISK, CONTROL):
            raise FuseOSError(errno.ENOENT)
        fh = self.next_fh
        self.next_fh += 1
        if path == CONTROL:
            self.control_out[fh] = self._status()
        return fh

    def truncate(self, path, length, fh=None):
        if path == CONTROL:
            return 0
        raise FuseOSError(errno.EPERM)

    def read(self, path, size, offset, fh):
        if fh in self.control_out:
            return self.control_out[fh][offset:offset + size]
        if not self.power:
            raise FuseOSError(errno.EIO)
        end = min(offset + size, self.size)
        out = bytearray()
        while offset < end:
            index, within = divmod(offset, BLOCK)
            take = min(BLOCK - within, end - offset)
            block = self.live.get(index)
            out += block[within:within + take] if block is not None else bytes(take)
            offset += take
        return bytes(out)

    def write(self, path, data, offset, fh):
        if fh in self.control_out:
            for line in data.decode(errors="replace").splitlines():
                self._command(line)
            return len(data)
        if not self.power:
            raise FuseOSError(errno.EIO)
        if offset + len(data) > self.size:
            raise FuseOSError(errno.ENOSPC)
        self.counts["write"] += 1
        done = 0
        while done < len(data):
            index, within = divmod(offset + done, BLOCK)
            take = min(BLOCK - within, len(data) - done)
            if take == BLOCK:
                block = data[done:done + BLOCK]
            else:
                block = bytearray(self.live.get(index) or bytes(BLOCK))
                block[within:within + take] = data[done:done + take]
                block = bytes(block)
            self.live[index] = block
            self.dirty.add(index)
            done += take
        self._fire("write")
        return len(data)

    def fsync(self, path, datasync, fh):
        if fh in self.control_out:
            return 0
        if not self.power:
            raise FuseOSError(errno.EIO)
        self.counts["flush"] += 1
        for index in self.dirty:
            self.durable[index] = self.live[index]
        self.dirty = set()
        self._fire("flush")
        return 0

    def _fire(self, operation):
        """Counts down an armed trigger for `operation`, which has just taken effect."""
        if self.armed is None or self.armed[0] != operation:
            return
        left = self.armed[1] - 1
        self.armed = (operation, left)
        if left == 0:
            self._cut("after %s #%d" % (operation, self.counts[operation]))

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        self.control_out.pop(fh, None)
        return 0

    def statfs(self, path):
        return {"f_bsize": BLOCK, "f_frsize": BLOCK, "f_blocks": self.size // BLOCK, "f_bfree": 0, "f_bavail": 0,
                "f_files": 3, "f_ffree": 0, "f_namemax": 255}


def unmount(path):
    subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mountpoint = os.path.abspath(args[0])
    options = {"--size": None, "--keep": "0.5", "--seed": None, "--inner": None, "--watch-pid": None, "--lifetime": None}
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag not in options or not rest:
            print("unknown argument or missing value: %s" % flag, file=sys.stderr)
            sys.exit(2)
        options[flag] = rest.pop(0)
    if options["--size"] is None or int(options["--size"]) % BLOCK:
        print("--size BYTES (a multiple of %d) is required" % BLOCK, file=sys.stderr)
        sys.exit(2)
    watch_pid = int(options["--watch-pid"]) if options["--watch-pid"] else None
    lifetime = float(options["--lifetime"]) if options["--lifetime"] else None
    inner = options["--inner"]

    def guard():
        deadline = time.monotonic() + lifetime if lifetime else None
        while True:
            time.sleep(0.5)
            gone = False
            if watch_pid is not None:
                try:
                    os.kill(watch_pid, 0)
                except ProcessLookupError:
                    gone = True
            if gone or (deadline and time.monotonic() > deadline):
                print("blockfs: %s, unmounting %s" % ("watched process gone" if gone else "lifetime over", mountpoint),
                      file=sys.stderr)
                if inner:
                    unmount(inner)
                unmount(mountpoint)
                os._exit(0)

    if watch_pid is not None or lifetime:
        threading.Thread(target=guard, daemon=True).start()
    seed = int(options["--seed"]) if options["--seed"] else None
    # direct_io: no page cache of `disk` in the kernel, so every read and write of the loop device
    # reaches the model, and what power on changes is seen at once.
    FUSE(BlockFS(int(options["--size"]), float(options["--keep"]), seed), mountpoint, foreground=True, nothreads=True,
         direct_io=True, big_writes=True, max_write=131072, entry_timeout=0, attr_timeout=0, negative_timeout=0,
         fsname="blockfs", subtype="blockfs")


if __name__ == "__main__":
    main()
