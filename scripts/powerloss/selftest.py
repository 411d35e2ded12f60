#!/usr/bin/python3
"""Self-tests of powerfs.py: the model keeps exactly what was flushed, and its controls do what they say.

Run as root: scripts/powerloss/selftest.py (mounts a powerfs in a temporary folder, always unmounts).
"""

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class PowerFSTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="powerfs-selftest-")
        cls.mnt = os.path.join(cls.base, "mnt")
        os.mkdir(cls.mnt)
        cls.fs = subprocess.Popen([os.path.join(HERE, "powerfs.py"), cls.mnt,
                                   "--watch-pid", str(os.getpid()), "--lifetime", "300"])
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(cls.mnt, ".powerloss")):
            if time.monotonic() > deadline or cls.fs.poll() is not None:
                raise RuntimeError("powerfs did not mount")
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.fs.terminate()
        try:
            cls.fs.wait(10)
        except subprocess.TimeoutExpired:
            cls.fs.kill()
        subprocess.run(["umount", "-l", cls.mnt], stderr=subprocess.DEVNULL)
        os.rmdir(cls.mnt)
        os.rmdir(cls.base)

    # helpers
    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def control(self, command):
        with open(self.path(".powerloss"), "w") as f:
            f.write(command + "\n")

    def status(self):
        with open(self.path(".powerloss")) as f:
            return dict(line.split(" ", 1) for line in f.read().splitlines())

    def fsync(self, path):
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, path, data, sync=False):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def power_cycle(self):
        self.control("cut")
        self.assertEqual(self.status()["power"], "off")
        self.control("on")
        self.assertEqual(self.status()["power"], "on")

    def setUp(self):
        # Each test in a durable folder of its own.
        self.control("on")
        self.dir = self.path(self.id().rsplit(".", 1)[-1])
        os.mkdir(self.dir)
        self.fsync(self.mnt)

    # the model
    def test_unsynced_data_is_lost(self):
        self.write(os.path.join(self.dir, "f"), b"hello")
        self.fsync(self.dir)  # the name is durable, the data is not
        self.write(os.path.join(self.dir, "never-named"), b"x", sync=True)  # data durable, name not
        self.power_cycle()
        self.assertEqual(os.listdir(self.dir), ["f"])
        self.assertEqual(self.read(os.path.join(self.dir, "f")), b"")

    def test_data_after_fsync_is_the_fsynced_version(self):
        fd = os.open(os.path.join(self.dir, "f"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"first")
        os.fsync(fd)
        os.write(fd, b" second")
        os.close(fd)
        self.fsync(self.dir)
        self.power_cycle()
        self.assertEqual(self.read(os.path.join(self.dir, "f")), b"first")

    def test_write_fsync_link_fsync_dir_is_kept(self):
        os.mkdir(os.path.join(self.dir, "spool"))
        os.mkdir(os.path.join(self.dir, "new"))
        self.fsync(self.dir)
        spooled = os.path.join(self.dir, "spool", "m1")
        self.write(spooled, b"message", sync=True)
        os.link(spooled, os.path.join(self.dir, "new", "m1"))
        self.fsync(os.path.join(self.dir, "new"))
        os.unlink(spooled)  # never made durable: the spool name comes back
        self.power_cycle()
        self.assertEqual(self.read(os.path.join(self.dir, "new", "m1")), b"message")
        self.assertEqual(os.listdir(os.path.join(self.dir, "spool")), [])  # the spool was never synced
        self.assertEqual(os.stat(os.path.join(self.dir, "new", "m1")).st_nlink, 1)

    def test_name_is_lost_without_directory_fsync(self):
        os.mkdir(os.path.join(self.dir, "new"))
        self.fsync(self.dir)
        spooled = os.path.join(self.dir, "m1")
        self.write(spooled, b"message", sync=True)
        self.fsync(self.dir)
        os.link(spooled, os.path.join(self.dir, "new", "m1"))
        self.assertEqual(os.stat(spooled).st_nlink, 2)
        self.power_cycle()
        self.assertEqual(os.listdir(os.path.join(self.dir, "new")), [])
        self.assertEqual(os.stat(spooled).st_nlink, 1)

    def test_unlink_and_rename_need_their_directory_fsyncs(self):
        a, b = os.path.join(self.dir, "a"), os.path.join(self.dir, "b")
        self.write(a, b"A", sync=True)
        self.fsync(self.dir)
        os.rename(a, b)
        self.power_cycle()
        self.assertEqual(sorted(os.listdir(self.dir)), ["a"])
        os.unlink(a)
        self.power_cycle()
        self.assertEqual(self.read(a), b"A")
        os.rename(a, b)
        self.fsync(self.dir)
        self.power_cycle()
        self.assertEqual(sorted(os.listdir(self.dir)), ["b"])

    def test_mkdir_without_parent_fsync_is_lost(self):
        parent = os.path.join(self.dir, "domain")
        box = os.path.join(parent, "user")
        os.mkdir(parent)
        os.mkdir(box)
        self.fsync(parent)  # user is durable in domain, but domain is not in self.dir
        self.write(os.path.join(box, "m"), b"x", sync=True)
        self.fsync(box)
        self.power_cycle()
        self.assertEqual(os.listdir(self.dir), [])
        # With the parent's fsync the same tree survives.
        os.mkdir(parent)
        self.fsync(self.dir)
        os.mkdir(box)
        self.fsync(parent)
        self.write(os.path.join(box, "m"), b"x", sync=True)
        self.fsync(box)
        self.power_cycle()
        self.assertEqual(self.read(os.path.join(box, "m")), b"x")

    # the controls
    def test_everything_fails_with_eio_while_the_power_is_off(self):
        self.write(os.path.join(self.dir, "f"), b"x", sync=True)
        self.fsync(self.dir)
        self.control("cut")
        for action in (lambda: os.listdir(self.dir), lambda: os.stat(os.path.join(self.dir, "f")),
                       lambda: os.mkdir(os.path.join(self.dir, "d")),
                       lambda: open(os.path.join(self.dir, "f"), "rb").read()):
            with self.assertRaises(OSError) as raised:
                action()
            self.assertEqual(raised.exception.errno, errno.EIO)
        self.control("on")
        self.assertEqual(self.read(os.path.join(self.dir, "f")), b"x")

    def test_cut_after_the_kth_fsync(self):
        self.control("arm after fsync 2")
        self.write(os.path.join(self.dir, "one"), b"1", sync=True)
        self.assertEqual(self.status()["power"], "on")
        fd = os.open(os.path.join(self.dir, "two"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"2")
        os.fsync(fd)  # the second: it succeeds, then the power goes
        status = self.status()
        self.assertEqual(status["power"], "off")
        self.assertIn("after fsync #2", status["cause"])
        with self.assertRaises(OSError):
            os.write(fd, b"more")
        os.close(fd)
        self.control("on")
        self.assertEqual(os.listdir(self.dir), [])  # the names were never synced

    def test_cut_before_the_kth_link_with_a_path_filter(self):
        os.mkdir(os.path.join(self.dir, "new"))
        self.fsync(self.dir)
        self.write(os.path.join(self.dir, "m"), b"m", sync=True)
        self.fsync(self.dir)
        self.control("arm before link 1 /new/")
        os.link(os.path.join(self.dir, "m"), os.path.join(self.dir, "other"))  # not matched
        with self.assertRaises(OSError) as raised:
            os.link(os.path.join(self.dir, "m"), os.path.join(self.dir, "new", "m"))
        self.assertEqual(raised.exception.errno, errno.EIO)
        self.assertIn("before link #1", self.status()["cause"])
        self.control("on")
        self.assertEqual(sorted(os.listdir(self.dir)), ["m", "new"])
        self.assertEqual(os.listdir(os.path.join(self.dir, "new")), [])

    def test_cut_after_mkdir_and_before_fsyncdir(self):
        self.control("arm after mkdir 1")
        os.mkdir(os.path.join(self.dir, "d"))
        self.assertEqual(self.status()["power"], "off")
        self.control("on")
        self.assertEqual(os.listdir(self.dir), [])
        os.mkdir(os.path.join(self.dir, "d"))
        self.control("arm before fsyncdir 1")
        with self.assertRaises(OSError):
            self.fsync(self.dir)
        self.control("on")
        self.assertEqual(os.listdir(self.dir), [])

    def test_victim_is_killed_at_the_cut(self):
        sleeper = subprocess.Popen(["sleep", "60"])
        self.control("victim %d" % sleeper.pid)
        self.control("arm before create 1")
        with self.assertRaises(OSError):
            self.write(os.path.join(self.dir, "f"), b"x")
        self.assertEqual(sleeper.wait(5), -signal.SIGKILL)
        self.control("on")

    def test_inode_numbers_are_shared_by_links(self):
        a, b = os.path.join(self.dir, "a"), os.path.join(self.dir, "b")
        self.write(a, b"x", sync=True)
        os.link(a, b)
        self.assertEqual(os.stat(a).st_ino, os.stat(b).st_ino)
        self.assertEqual(os.stat(a).st_nlink, 2)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("powerfs self-tests need root (FUSE mounts)")
    unittest.main(verbosity=2)
