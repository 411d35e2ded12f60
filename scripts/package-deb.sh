#!/usr/bin/env bash
# Builds the Debian package of inetinfo: OUTDIR/inetinfo_VERSION_ARCH.deb (docs/packaging.md).
#
#   scripts/package-deb.sh OUTDIR                       # builds the release binaries first (as install.sh)
#   scripts/package-deb.sh --no-build OUTDIR            # packages what the last build left in .build-systemd
#   BUILT_BIN_DIR=DIR scripts/package-deb.sh OUTDIR     # packages inetinfo and inetinfoctl from DIR
#
# The tree is what `DESTDIR=STAGING PREFIX=/usr scripts/install.sh` installs (binaries, every unit in
# units/, /etc/inetinfo/inetinfo.toml, the default web root, the manual pages, operations.md), plus
# the other operator documents, a copyright file and a changelog in /usr/share/doc/inetinfo. The
# binaries are stripped (as dh_strip does; --no-strip keeps them as built) and lose their RUNPATH
# ($ORIGIN, which SwiftPM adds and nothing here needs) when chrpath is installed.
#
# VERSION is the `public static let version = "X"` line of Sources/InetinfoHost/Version.swift, ARCH
# is `dpkg --print-architecture`. Depends comes from dpkg-shlibdeps on the staged binaries. The
# maintainer scripts enable and start nothing: postinst only runs `systemctl daemon-reload` when
# systemd runs; prerm stops the units on removal; purge leaves the mail in /var/lib/inetinfo.
#
# Variables: DEB_MAINTAINER ("Name <address>", default: the author of the last commit), SCRATCH and
# SWIFT_BUILD_FLAGS (passed to install.sh), LINTIAN=1 (run lintian on the result when installed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build=yes strip=yes outdir=
for argument in "$@"; do
    case $argument in
        --no-build) build=no ;;
        --no-strip) strip=no ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "package-deb.sh: unknown option '$argument' (see --help)" >&2; exit 2 ;;
        *) [ -z "$outdir" ] || { echo "package-deb.sh: one OUTDIR only" >&2; exit 2; }; outdir=$argument ;;
    esac
done
[ -n "$outdir" ] || { echo "usage: scripts/package-deb.sh [--no-build] [--no-strip] OUTDIR (see --help)" >&2; exit 2; }
[ -n "${BUILT_BIN_DIR:-}" ] && build=no

for command in dpkg dpkg-deb dpkg-shlibdeps gzip strip objdump; do
    command -v "$command" >/dev/null || {
        echo "package-deb.sh: $command is missing (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done

version=$(sed -n 's/^[[:space:]]*public static let version = "\([^"]*\)".*/\1/p' Sources/InetinfoHost/Version.swift)
[ "$(printf '%s\n' "$version" | wc -l)" -eq 1 ] && [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || {
    echo "package-deb.sh: no usable 'public static let version = \"X\"' in Sources/InetinfoHost/Version.swift ('$version')" >&2
    exit 1
}
arch=$(dpkg --print-architecture)
if [ -n "${DEB_MAINTAINER:-}" ]; then
    maintainer=$DEB_MAINTAINER
else
    maintainer=$(git -C "$repo" log -1 --format='%an <%ae>' 2>/dev/null || true)
    [ -n "$maintainer" ] || maintainer="inetinfo maintainers <root@localhost>"
fi
# The changelog's date: the last commit's, so that two builds of one commit are alike.
date_epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
# The years of the project's history, for the copyright notice.
years=$(git -C "$repo" log --format=%ad --date=format:%Y 2>/dev/null | sort -u | sed -n '1p;$p' | paste -sd- | sed 's/^\([0-9]*\)-\1$/\1/')
[ -n "$years" ] || years=$(date -u -d "@$date_epoch" +%Y)

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
deb=$outdir/inetinfo_${version}_${arch}.deb

# The build tree: WORK/debian/control (for dpkg-shlibdeps) and WORK/debian/inetinfo (the package root).
work=$(mktemp -d /tmp/inetinfo-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/debian/inetinfo
mkdir -p "$root"
chmod 0755 "$root"
umask 022

install_flags=()
[ "$build" = no ] && install_flags=(--no-build)
echo "package-deb.sh: installing into the package root (install.sh, PREFIX=/usr${install_flags[*]:+, ${install_flags[*]}})" >&2
# (Its output, the build's included, goes to standard error: standard output carries the package's path.)
DESTDIR=$root PREFIX=/usr scripts/install.sh ${install_flags[@]+"${install_flags[@]}"} >&2 || {
    echo "package-deb.sh: scripts/install.sh failed" >&2; exit 1; }
rm -f "$root/etc/inetinfo/inetinfo.toml.default"

# Binaries: no debugging sections nor symbol tables (dh_strip's options), no RUNPATH.
for binary in "$root/usr/bin/inetinfo" "$root/usr/bin/inetinfoctl"; do
    if [ "$strip" = yes ]; then
        strip --remove-section=.comment --remove-section=.note --strip-unneeded "$binary"
    fi
    if objdump -p "$binary" | grep -qE '^[[:space:]]*(RUNPATH|RPATH)[[:space:]]'; then
        if command -v chrpath >/dev/null; then
            chrpath -d "$binary" >/dev/null
        else
            echo "package-deb.sh: note: chrpath is not installed; the binaries keep their RUNPATH \$ORIGIN" >&2
        fi
    fi
done

# Documentation: operations.md (install.sh; the units' Documentation=) and the other operator pages,
# uncompressed so that their links to each other work; a changelog and the copyright file.
docdir=$root/usr/share/doc/inetinfo
for page in README.md docs/configuration.md docs/control.md docs/supervision.md docs/smtp.md docs/http.md \
            docs/packaging.md; do
    if [ -f "$page" ]; then install -m 0644 "$page" "$docdir/${page##*/}"; fi
done
{
    printf 'inetinfo (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Packaged from the source tree at commit %s (scripts/package-deb.sh).\n' "$commit"
    printf '  * README.md lists what each release added.\n\n'
    printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$date_epoch")"
} | gzip -9n >"$docdir/changelog.gz"
chmod 0644 "$docdir/changelog.gz"

license_of() {  # the license of a SwiftPM checkout, from the first lines of its LICENSE file
    local file
    for file in "$1"/LICENSE "$1"/LICENSE.txt "$1"/LICENSE.md; do
        [ -f "$file" ] || continue
        if head -5 "$file" | grep -q 'Apache License'; then echo Apache-2.0; return; fi
        if head -5 "$file" | grep -q 'MIT License'; then echo MIT; return; fi
    done
    echo see-upstream
}
# DEP-5. The source of the binaries is this tree plus the Swift packages SwiftPM checks out into
# .build/checkouts/NAME (the scratch path's checkouts/), listed from Package.resolved.
{
    cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: inetinfo
Comment: Built by scripts/package-deb.sh. The binaries link the Swift standard library,
 Foundation and Dispatch (Copyright Apple Inc. and the Swift project authors, Apache
 License 2.0 with the Runtime Library Exception) and the Swift packages below
 statically (--static-swift-stdlib); libc, libstdc++, libgcc and libsystemd are
 shared libraries from Debian.

Files: *
Copyright: $years the inetinfo authors
License: unspecified
 The inetinfo source tree states no license of its own yet. Ask its maintainers
 ($maintainer) before redistributing this package.
EOF
    checkouts=${SCRATCH:-.build-systemd}/checkouts
    awk -F'"' '/"identity"/ {identity = $4} /"location"/ {print identity, $4}' Package.resolved |
    while read -r identity location; do
        checkout=$(find "$checkouts" -mindepth 1 -maxdepth 1 -type d -iname "$identity" -print -quit 2>/dev/null || true)
        name=${checkout##*/}
        name=${name:-$identity}
        license=see-upstream
        [ -n "$checkout" ] && license=$(license_of "$checkout")
        printf '\nFiles: .build/checkouts/%s/*\nCopyright: the %s authors, %s\nLicense: %s\n' \
            "$name" "$name" "${location%.git}" "$license"
        if [ "$license" = see-upstream ]; then
            printf ' The license is in the repository, %s.\n' "${location%.git}"
        fi
        if [ "$identity" = tomlkit ]; then
            printf '\nFiles: .build/checkouts/%s/Sources/CTOML/*\nCopyright: Mark Gillard <mark.gillard@outlook.com.au>\nLicense: MIT\n' "$name"
            printf ' toml++, vendored by TOMLKit.\n'
        fi
    done
    cat <<'EOF'

License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all
 copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.
EOF
} >"$docdir/copyright"
chmod 0644 "$docdir/copyright"

# Control files.
mkdir -p "$root/DEBIAN"
chmod 0755 "$root/DEBIAN"
printf 'Source: inetinfo\nMaintainer: %s\n\nPackage: inetinfo\nArchitecture: any\n' "$maintainer" >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$root/usr/bin/inetinfo" -e"$root/usr/bin/inetinfoctl" 2>"$work/shlibdeps.log" \
          | sed -n 's/^shlibs:Depends=//p') || true
if [ -z "$depends" ]; then
    # dpkg-shlibdeps failed: libsystemd0 and the C library, at the version the binaries were linked with.
    echo "package-deb.sh: note: dpkg-shlibdeps failed ($(tail -1 "$work/shlibdeps.log")); Depends from objdump -p" >&2
    glibc=$(objdump -T "$root/usr/bin/inetinfo" "$root/usr/bin/inetinfoctl" | grep -o 'GLIBC_[0-9.]*' \
            | sed 's/GLIBC_//' | sort -u -V | tail -1)
    depends="libc6 (>= $glibc), libsystemd0"
    objdump -p "$root/usr/bin/inetinfo" | grep -q 'NEEDED.*libstdc++' && depends="$depends, libstdc++6"
    objdump -p "$root/usr/bin/inetinfo" | grep -q 'NEEDED.*libgcc_s' && depends="$depends, libgcc-s1"
fi
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<EOF
Package: inetinfo
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: mail
Priority: optional
Description: supervised SMTP and HTTP host with systemd integration
 inetinfo is one process that hosts an SMTP service (ESMTP with CHUNKING/BDAT,
 durable delivery to Maildir) and an HTTP/1.1 static file service, supervises
 them and restarts whatever fails: a service instance after a failure (with
 backoff and a restart intensity), a worker process after a crash, and through
 systemd (Type=notify, watchdog, socket units) the whole host. inetinfoctl
 shows and steers it: status, events, restarts, reload, crash records.
 .
 The package installs the units but enables and starts nothing; see
 /usr/share/doc/inetinfo/packaging.md.
EOF

echo /etc/inetinfo/inetinfo.toml >"$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# inetinfo postinst: tells a running systemd about the installed units. It enables and starts nothing
# (docs/packaging.md): that is the operator's decision.
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    if [ -n "$2" ] && systemctl --quiet is-active inetinfo.service 2>/dev/null; then
        echo "inetinfo: the running host still runs the previous version; 'systemctl restart inetinfo' when convenient" >&2
    fi
fi
exit 0
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# inetinfo prerm: on removal, stops the host and its sockets (a socket unit left listening would start a
# binary that is gone). An upgrade leaves a running host alone.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    units=
    for unit in /usr/lib/systemd/system/inetinfo.service /usr/lib/systemd/system/inetinfo-*.socket; do
        if [ -e "$unit" ]; then units="$units ${unit##*/}"; fi
    done
    [ -z "$units" ] || systemctl --system stop $units >/dev/null 2>&1 || true
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# inetinfo postrm. dpkg itself removes /etc/inetinfo/inetinfo.toml on purge (a conffile). The state
# directory, /var/lib/inetinfo (/var/lib/private/inetinfo: mail and crash records), is never removed:
# deleting mail is not a package manager's business (docs/packaging.md).
set -e
case "$1" in
    purge)
        # Enablement links the operator made (`systemctl enable`), now pointing at removed units.
        for link in /etc/systemd/system/*.wants/inetinfo.service /etc/systemd/system/*.wants/inetinfo-*.socket; do
            if [ -L "$link" ] && [ ! -e "$link" ]; then rm -f "$link"; fi
        done
        for state in /var/lib/private/inetinfo /var/lib/inetinfo; do
            if [ -e "$state" ]; then
                echo "inetinfo: kept $state (mail and crash records); remove it yourself if you mean to" >&2
                break
            fi
        done
        ;;
esac
if [ "$1" = remove ] || [ "$1" = purge ]; then
    if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

echo "package-deb.sh: dpkg-deb --build ($(du -sh --exclude=DEBIAN "$root" | cut -f1) to compress)" >&2
SOURCE_DATE_EPOCH=$date_epoch dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
if [ "${LINTIAN:-0}" = 1 ] && command -v lintian >/dev/null; then
    lintian --display-info "$deb" >&2 || true
fi
