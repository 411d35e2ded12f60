#!/usr/bin/env bash
# Runs as PID 1 of the private pid/mount/uts/cgroup namespaces that harness.sh creates (via unshare),
# builds a contained view of the machine, then execs systemd in its place. Nothing here changes the
# machine: every mount is made in the private mount namespace (made rprivate first, so nothing
# propagates back) and dies with it.
#
# Argument: the harness work directory (prepared by harness_prepare in harness.sh):
#   WORK/etc-systemd/   the harness's own system/, system.conf.d/ and journald.conf.d/
#   WORK/root/usr/local the staged install (DESTDIR) overlaid on /usr/local (optional)
#   WORK/system/        (optional) makes /usr and /etc writable overlays, with WORK/system/usr and
#                       WORK/system/etc (when present) on top of the machine's and the upper layers on
#                       the private /run: for a test that installs a Debian package inside (dpkg writes
#                       /usr, /etc and /var; none of it reaches the machine)
set -euo pipefail
work=$1
say() { echo "boot-inside: $*" >&2; }

mount --make-rprivate /

# /run: a fresh tmpfs. The harness's own scratch lives in /run/.harness.
# (Room for an installed package when WORK/system asks for writable /usr and /etc.)
run_size=256m
[ -d "$work/system" ] && run_size=768m
mount -t tmpfs -o mode=0755,nosuid,nodev,size=$run_size tmpfs /run
h=/run/.harness
mkdir -p "$h/etc-systemd" "$h/var-upper" "$h/var-work" "$h/empty"

# writable_overlay DIR: WORK/system/DIR (if any) over the machine's DIR, writes on the private /run.
writable_overlay() {
    local dir=$1 lower=$1
    [ -d "$work/system$1" ] && lower=$work/system$1:$1
    mkdir -p "$h/system-upper$dir" "$h/system-work$dir"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$h/system-upper$dir,workdir=$h/system-work$dir" "$dir"
}

if [ -d "$work/system" ]; then
    # /usr and /etc writable (see the top): a package installed inside lands on the upper layers.
    writable_overlay /usr
    writable_overlay /etc
else
    # /etc read-only: nothing the harness boots has a reason to write there.
    mount --bind /etc /etc
    mount -o remount,bind,ro /etc
fi

# /etc/systemd: a tmpfs copy without system/ (the machine's enablement links and local units), with the
# harness's system/ (default target, reduced sysinit.target, masks) and manager/journald settings.
tar -C /etc/systemd --exclude=./system -cf - . | tar -C "$h/etc-systemd" -xf -
cp -a "$work/etc-systemd/." "$h/etc-systemd/"
mount --bind "$h/etc-systemd" /etc/systemd

# Private hostname (UTS namespace) and the file systemd reads it from.
hostname inetinfo-harness
echo inetinfo-harness >"$h/hostname"
mount --bind "$h/hostname" /etc/hostname

# /var: an overlay whose upper layer is on the private /run (journal, state directories, /var/tmp).
mount -t overlay overlay -o "lowerdir=/var,upperdir=$h/var-upper,workdir=$h/var-work" /var

# /usr/local: the staged install on top of the machine's; writes (a test editing the installed
# configuration) go to an upper layer on the private /run.
if [ -d "$work/root/usr/local" ]; then
    mkdir -p "$h/usr-local-upper" "$h/usr-local-work"
    mount -t overlay overlay \
        -o "lowerdir=$work/root/usr/local:/usr/local,upperdir=$h/usr-local-upper,workdir=$h/usr-local-work" /usr/local
fi

# /dev: a private tmpfs with only the basic nodes, its own devpts instance and /dev/shm.
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs /dev
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$node"
    mknod -m 0666 "/dev/$name" c "$major" "$minor"
done
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# /sys read-only (a non-recursive bind: the machine's cgroup mounts under it are left behind), and a
# fresh cgroup2 from inside the new cgroup namespace: its root is the directory harness.sh created.
mount --bind /sys /sys
mount -o remount,bind,ro,nosuid,nodev,noexec /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup

# /proc/sys read-only: systemd's sysctl writes (fs.file-max, fs.nr_open, …) fail harmlessly.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi

say "namespaces ready; exec systemd"
exec env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    SYSTEMD_GENERATOR_PATH="$h/empty" SYSTEMD_ENVIRONMENT_GENERATOR_PATH="$h/empty" \
    /lib/systemd/systemd --unit=inetinfo-harness.target --show-status=false
