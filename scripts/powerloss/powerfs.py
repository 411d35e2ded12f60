#!/usr/bin/python3
"""powerfs: a FUSE file system that loses power like a disk with a volatile cache and no ordering.

It models ext4 without a journal as the durable-mail contract assumes it (docs/smtp.md, "Delivery that
loses nothing"), pessimistically:

  * a file's data is durable only after an fsync/fdatasync of that file (its content at that moment);
  * a directory entry (create, link, rename, unlink, mkdir, rmdir, symlink) is durable only after an
    fsync of the directory that holds it (its entries at that moment);
  * nothing else is ever durable: no ordering between operations, no implicit flush at close, and no
    sync(2)/syncfs(2) (they never reach a FUSE file system anyway).

The model is in memory. Every inode has its live state (file bytes, directory entries) and its durable
state (the bytes of its last fsync; the entries of its last directory fsync). "Cutting the power" makes
every later operation fail with EIO; "power on" replaces the live state by the durable one: the tree
is rebuilt from the root's durable entries, each file holding its durable bytes, and whatever is not
reachable that way is gone. So after power on the mount shows exactly what had reached the "disk".

Control: the file `.powerloss` at the root of the mount (it stays usable while the power is off, and it
is not part of the model). Write one command per line; read it to get the status.

    cut                       cut the power now
    on                        power on: the live state becomes the durable one; disarms every trigger
    arm WHEN OP K [REGEX]     cut automatically at the K-th OP (counted from now) whose path matches
                              REGEX (Python re.search; any path when omitted), e.g. `/new/` or
                              `\.test(/u[0-9]+)?$`. WHEN is `before` (the operation fails with
                              EIO and has no effect) or `after` (it takes effect, and is durable if it is
                              a sync, and returns success; everything after it fails).
                              OP: fsync (file fsync/fdatasync), fsyncdir, create, write, link, unlink,
                              rename, mkdir, rmdir, symlink.
    disarm                    forget the armed trigger
    victim PID                send SIGKILL to PID at the moment of the cut (the host dies with the power)

Status (read `.powerloss`): `key value` lines: `power on|off`, `cuts N`, `cause TEXT` (of the last cut),
`armed TEXT|-`, and `count.OP N` for every operation since the mount.

Run: powerfs.py MOUNTPOINT [--watch-pid PID] [--lifetime SECONDS]. It stays in the foreground; SIGTERM
unmounts. With --watch-pid it unmounts and exits when that process is gone, and with --lifetime after
that many seconds whatever happens: a test that dies cannot leave a mount behind for long.
Requires python3-fusepy (libfuse2) and root (or user_allow_other setups are not needed: run as root).
"""

import errno
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import fusepy
from fusepy import FUSE, FuseOSError, Operations

CONTROL = "/.powerloss"
OPS = ("fsync", "fsyncdir", "create", "write", "link", "unlink", "rename", "mkdir", "rmdir", "symlink")


class _NullPathOperations(fusepy.fuse_operations):
    """Lets read/write/fsync/release on an open file whose name was removed reach us (path None)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag_nullpath_ok = 1


fusepy.fuse_operations = _NullPathOperations


class Inode:
    __slots__ = ("ino", "kind", "mode", "uid", "gid", "data", "durable_data", "entries", "durable_entries",
                 "target", "times", "nlink")

    def __init__(self, ino, kind, mode, uid=0, gid=0, target=None):
        self.ino = ino
        self.kind = kind  # "f", "d" or "l"
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.data = bytearray()
        self.durable_data = b""
        self.entries = {} if kind == "d" else None
        self.durable_entries = {} if kind == "d" else None
        self.target = target
        now = time.time()
        self.times = [now, now, now]  # atime, mtime, ctime
        self.nlink = 0


class PowerFS(Operations):
    use_ns = False

    def __init__(self):
        self._mutex = threading.RLock()
        self.next_ino = 2
        self.root = Inode(1, "d", stat.S_IFDIR | 0o755)
        self.root.nlink = 2
        self.inodes = {1: self.root}
        self.handles = {}  # fh -> inode
        self.next_fh = 1
        self.power = True
        self.cuts = 0
        self.cause = "-"
        self.armed = None  # (when, op, remaining, substring, k)
        self.victim = None
        self.grace = None
        self.counts = {op: 0 for op in OPS}
        self.control_out = {}  # fh -> status bytes
        self.control_in = b""

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
        """The live state becomes the durable one: rebuilt from the root by durable entries."""
        reachable = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.ino in reachable:
                continue
            reachable[node.ino] = node
            if node.kind == "d":
                node.entries = dict(node.durable_entries)
                stack.extend(self.inodes[i] for i in node.entries.values())
            elif node.kind == "f":
                node.data = bytearray(node.durable_data)
            node.nlink = 0
        for node in reachable.values():
            if node.kind == "d":
                node.nlink += 2
                for i in node.entries.values():
                    child = reachable[i]
                    child.nlink += 1 if child.kind != "d" else 0
                    if child.kind == "d":
                        node.nlink += 1
        self.inodes = reachable
        self.handles = {}
        self.armed = None
        self.grace = None
        self.power = True

    def _op(self, op, path):
        """Counts `op` and fires an armed trigger. Call before the operation takes effect; returns
        True when the power must be cut after it (the caller calls `_after`)."""
        if not self.power:
            raise FuseOSError(errno.EIO)
        self.counts[op] += 1
        armed = self.armed
        if armed and armed[1] == op and (armed[3] is None or (path is not None and re.search(armed[3], path))):
            remaining = armed[2] - 1
            if remaining > 0:
                self.armed = (armed[0], op, remaining, armed[3], armed[4])
                return False
            cause = "%s %s #%d of %s" % (armed[0], op, armed[4], path)
            if armed[0] == "before":
                self._cut(cause)
                raise FuseOSError(errno.EIO)
            self._pending_cause = cause
            return True
        return False

    def _after(self, cut, path=None):
        if cut:
            self._cut(self._pending_cause)
            # libfuse looks up a name it has just made (mkdir, create, link, symlink): that lookup is part
            # of the operation, which must still return success.
            self.grace = path

    def _check(self):
        if not self.power:
            raise FuseOSError(errno.EIO)

    # ----------------------------------------------------------------- control file

    def _status(self):
        armed = "-" if not self.armed else "%s %s %d %s" % (self.armed[0], self.armed[1], self.armed[2], self.armed[3] or "")
        lines = ["power %s" % ("on" if self.power else "off"), "cuts %d" % self.cuts, "cause %s" % self.cause,
                 "armed %s" % armed.strip()]
        lines += ["count.%s %d" % (op, self.counts[op]) for op in OPS]
        return ("\n".join(lines) + "\n").encode()

    def _command(self, line):
        words = line.split()
        if not words:
            return
        if words[0] == "cut":
            if self.power:
                self._cut("cut command")
        elif words[0] == "on":
            self._power_on()
        elif words[0] == "arm" and len(words) in (4, 5) and words[1] in ("before", "after") and words[2] in OPS:
            k = int(words[3])
            if k < 1:
                raise FuseOSError(errno.EINVAL)
            self.armed = (words[1], words[2], k, words[4] if len(words) == 5 else None, k)
        elif words[0] == "disarm":
            self.armed = None
        elif words[0] == "victim" and len(words) == 2:
            self.victim = int(words[1])
        else:
            raise FuseOSError(errno.EINVAL)

    # ----------------------------------------------------------------- lookups

    def _lookup(self, path):
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if node.kind != "d":
                raise FuseOSError(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise FuseOSError(errno.ENOENT)
            node = self.inodes[ino]
        return node

    def _parent(self, path):
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if parent.kind != "d":
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def _new(self, kind, mode, target=None):
        uid, gid, _ = fusepy.fuse_get_context()
        node = Inode(self.next_ino, kind, mode, uid, gid, target)
        self.next_ino += 1
        self.inodes[node.ino] = node
        return node

    def _file(self, path, fh):
        if fh and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self._lookup(path)

    # ----------------------------------------------------------------- attributes

    def getattr(self, path, fh=None):
        with self._mutex:
            if path == CONTROL:
                now = time.time()
                return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=len(self._status()), st_ino=0xC0FFEE,
                            st_atime=now, st_mtime=now, st_ctime=now)
            if not self.power and path is not None and path == self.grace:
                self.grace = None
            else:
                self._check()
            node = self._file(path, fh)
            size = len(node.data) if node.kind == "f" else (len(node.target) if node.kind == "l" else 4096)
            return dict(st_mode=node.mode, st_ino=node.ino, st_nlink=node.nlink, st_uid=node.uid, st_gid=node.gid,
                        st_size=size, st_blocks=(size + 511) // 512, st_atime=node.times[0], st_mtime=node.times[1],
                        st_ctime=node.times[2])

    def chmod(self, path, mode):
        with self._mutex:
            self._check()
            node = self._lookup(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)

    def chown(self, path, uid, gid):
        with self._mutex:
            self._check()
            node = self._lookup(path)
            if uid != -1 and uid != 0xFFFFFFFF:
                node.uid = uid
            if gid != -1 and gid != 0xFFFFFFFF:
                node.gid = gid

    def utimens(self, path, times=None):
        with self._mutex:
            self._check()
            node = self._lookup(path)
            now = time.time()
            atime, mtime = times if times else (now, now)
            node.times[0], node.times[1] = atime, mtime

    def access(self, path, amode):
        with self._mutex:
            if path == CONTROL:
                return 0
            self._check()
            self._lookup(path)
            return 0

    def statfs(self, path):
        with self._mutex:
            self._check()
            return dict(f_bsize=4096, f_frsize=4096, f_blocks=1 << 20, f_bfree=1 << 19, f_bavail=1 << 19,
                        f_files=1 << 20, f_ffree=1 << 19, f_favail=1 << 19, f_namemax=255)

    # ----------------------------------------------------------------- directories

    def readdir(self, path, fh):
        with self._mutex:
            self._check()
            node = self._lookup(path)
            names = [".", ".."] + list(node.entries)
            if path == "/":
                names.append(CONTROL[1:])
            return names

    def mkdir(self, path, mode):
        with self._mutex:
            cut = self._op("mkdir", path)
            parent, name = self._parent(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            node = self._new("d", stat.S_IFDIR | (mode & 0o7777))
            node.nlink = 2
            parent.entries[name] = node.ino
            parent.nlink += 1
            self._after(cut, path)

    def rmdir(self, path):
        with self._mutex:
            cut = self._op("rmdir", path)
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.kind != "d":
                raise FuseOSError(errno.ENOTDIR)
            if node.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            parent.nlink -= 1
            node.nlink = 0
            self._after(cut)

    def fsyncdir(self, path, datasync, fh):
        with self._mutex:
            cut = self._op("fsyncdir", path)
            node = self._lookup(path)
            node.durable_entries = dict(node.entries)
            self._after(cut)

    # ----------------------------------------------------------------- names

    def create(self, path, mode, fi=None):
        with self._mutex:
            if path == CONTROL:
                return self.open(path, os.O_WRONLY)
            cut = self._op("create", path)
            parent, name = self._parent(path)
            if name in parent.entries:
                node = self.inodes[parent.entries[name]]
            else:
                node = self._new("f", stat.S_IFREG | (mode & 0o7777))
                node.nlink = 1
                parent.entries[name] = node.ino
            fh = self._handle(node)
            self._after(cut, path)
            return fh

    def link(self, target, source):
        # fusepy passes (new name, existing name)
        with self._mutex:
            cut = self._op("link", target)
            node = self._lookup(source)
            if node.kind == "d":
                raise FuseOSError(errno.EPERM)
            parent, name = self._parent(target)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = node.ino
            node.nlink += 1
            node.times[2] = time.time()
            self._after(cut, target)

    def symlink(self, target, source):
        # fusepy passes (link path, what it points to)
        with self._mutex:
            cut = self._op("symlink", target)
            parent, name = self._parent(target)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            node = self._new("l", stat.S_IFLNK | 0o777, target=source)
            node.nlink = 1
            parent.entries[name] = node.ino
            self._after(cut, target)

    def readlink(self, path):
        with self._mutex:
            self._check()
            node = self._lookup(path)
            if node.kind != "l":
                raise FuseOSError(errno.EINVAL)
            return node.target

    def unlink(self, path):
        with self._mutex:
            cut = self._op("unlink", path)
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.kind == "d":
                raise FuseOSError(errno.EISDIR)
            del parent.entries[name]
            node.nlink -= 1
            node.times[2] = time.time()
            self._after(cut)

    def rename(self, old, new):
        with self._mutex:
            cut = self._op("rename", new)
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            node = self._lookup(old)
            replaced = new_parent.entries.get(new_name)
            if replaced == node.ino:
                self._after(cut)
                return
            if replaced is not None:
                victim = self.inodes[replaced]
                if victim.kind == "d":
                    if node.kind != "d":
                        raise FuseOSError(errno.EISDIR)
                    if victim.entries:
                        raise FuseOSError(errno.ENOTEMPTY)
                    new_parent.nlink -= 1
                elif node.kind == "d":
                    raise FuseOSError(errno.ENOTDIR)
                victim.nlink -= 1 if victim.kind != "d" else victim.nlink
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = node.ino
            if node.kind == "d" and old_parent is not new_parent:
                old_parent.nlink -= 1
                new_parent.nlink += 1
            self._after(cut)

    # ----------------------------------------------------------------- files

    def _handle(self, node):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    def open(self, path, flags):
        with self._mutex:
            if path == CONTROL:
                fh = self.next_fh
                self.next_fh += 1
                self.control_out[fh] = self._status()
                return fh
            self._check()
            node = self._lookup(path)
            if node.kind == "d":
                raise FuseOSError(errno.EISDIR)
            if flags & os.O_TRUNC and node.kind == "f":
                node.data = bytearray()
            return self._handle(node)

    def read(self, path, size, offset, fh):
        with self._mutex:
            if fh in self.control_out:
                if offset == 0:
                    self.control_out[fh] = self._status()
                return self.control_out[fh][offset:offset + size]
            self._check()
            node = self._file(path, fh)
            return bytes(node.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self._mutex:
            if fh in self.control_out:
                self.control_in += data
                while b"\n" in self.control_in:
                    line, _, self.control_in = self.control_in.partition(b"\n")
                    self._command(line.decode())
                return len(data)
            cut = self._op("write", path)
            node = self._file(path, fh)
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset:offset + len(data)] = data
            node.times[1] = node.times[2] = time.time()
            self._after(cut)
            return len(data)

    def truncate(self, path, length, fh=None):
        with self._mutex:
            if path == CONTROL:
                return
            self._check()
            node = self._file(path, fh)
            if length < len(node.data):
                del node.data[length:]
            else:
                node.data.extend(b"\0" * (length - len(node.data)))

    def fsync(self, path, datasync, fh):
        with self._mutex:
            if fh in self.control_out:
                return
            cut = self._op("fsync", path)
            node = self._file(path, fh)
            node.durable_data = bytes(node.data)
            self._after(cut)

    def flush(self, path, fh):
        with self._mutex:
            if fh in self.control_out and self.control_in:
                line, self.control_in = self.control_in, b""
                self._command(line.decode())

    def release(self, path, fh):
        with self._mutex:
            self.control_out.pop(fh, None)
            self.handles.pop(fh, None)


def unmount(mountpoint):
    subprocess.run(["umount", "-l", mountpoint], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mountpoint = os.path.abspath(args[0])
    watch_pid = None
    lifetime = None
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "--watch-pid":
            watch_pid = int(rest.pop(0))
        elif flag == "--lifetime":
            lifetime = float(rest.pop(0))
        else:
            print("unknown argument %s" % flag, file=sys.stderr)
            sys.exit(2)

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
                print("powerfs: %s, unmounting %s" % ("watched process gone" if gone else "lifetime over", mountpoint),
                      file=sys.stderr)
                unmount(mountpoint)
                os._exit(0)

    if watch_pid is not None or lifetime:
        threading.Thread(target=guard, daemon=True).start()
    # No kernel caching of names, attributes or data: every operation reaches the model, and what
    # power on changes is seen at once. use_ino: st_ino is the model's (the spool recovery compares them).
    FUSE(PowerFS(), mountpoint, foreground=True, nothreads=True, use_ino=True, hard_remove=True, direct_io=True, big_writes=True, max_write=131072,
         entry_timeout=0, attr_timeout=0, negative_timeout=0, fsname="powerfs", subtype="powerfs")


if __name__ == "__main__":
    main()
