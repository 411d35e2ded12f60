#!/usr/bin/env bash
# Builds release binaries and installs inetinfo: binaries, systemd units, default web root, default
# configuration, manual pages and the operations guide. It never enables, starts or reloads anything.
#
#   scripts/install.sh                            # into /usr/local (units in /usr/local/lib/systemd/system)
#   PREFIX=/usr scripts/install.sh                # into /usr (units in /usr/lib/systemd/system, config in /etc)
#   DESTDIR=/tmp/stage scripts/install.sh         # staged install (packaging, tests)
#   scripts/install.sh --no-build                 # install what the last build left in the scratch path
#   BUILT_BIN_DIR=DIR scripts/install.sh --no-build   # install inetinfo and inetinfoctl from DIR
#
# Variables: PREFIX (default /usr/local), DESTDIR (default empty), SYSCONFDIR (default /etc for
# PREFIX=/usr, else $PREFIX/etc), UNITDIR (default $PREFIX/lib/systemd/system), SCRATCH (the build's
# --scratch-path, default .build-systemd), SWIFT_BUILD_FLAGS (extra `swift build` flags).
#
# The binaries are linked with the Swift standard library and Foundation statically
# (--static-swift-stdlib), so the installed host needs no Swift toolchain; it links libsystemd
# dynamically. The paths in the units and in the default configuration are rewritten to match
# PREFIX/SYSCONFDIR (in the manual pages too, which go to PREFIX/share/man, gzipped). An existing
# configuration file is kept; the new default is then written next to it as inetinfo.toml.default.
# scripts/package-deb.sh builds the Debian package from a DESTDIR install with PREFIX=/usr.
#
# Afterwards (as root, on the machine that runs it):
#   systemctl daemon-reload
#   systemctl enable --now inetinfo-smtp.socket inetinfo-http.socket   # start on first connection
#   systemctl enable --now inetinfo.service                             # or: start now and at boot
set -euo pipefail
cd "$(dirname "$0")/.."

build=yes
for argument in "$@"; do
    case $argument in
        --no-build) build=no ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$argument' (see --help)" >&2; exit 2 ;;
    esac
done

PREFIX=${PREFIX:-/usr/local}
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
if [ -z "${SYSCONFDIR:-}" ]; then
    if [ "$PREFIX" = /usr ]; then SYSCONFDIR=/etc; else SYSCONFDIR=$PREFIX/etc; fi
fi
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
SCRATCH=${SCRATCH:-.build-systemd}
read -r -a extra_flags <<<"${SWIFT_BUILD_FLAGS:-}"

case $UNITDIR in
    /etc/systemd/system|/usr/lib/systemd/system|/lib/systemd/system|/usr/local/lib/systemd/system) ;;
    *) echo "install.sh: note: systemd does not search $UNITDIR; link the units with" \
            "'systemctl link $UNITDIR/inetinfo*.s*' after installing" >&2 ;;
esac

if [ "$build" = yes ]; then
    scripts/install-deps.sh
    for product in inetinfo inetinfoctl; do
        echo "install.sh: building $product (release, $SCRATCH)" >&2
        swift build -c release --scratch-path "$SCRATCH" --static-swift-stdlib --product "$product" ${extra_flags[@]+"${extra_flags[@]}"}
    done
fi
if [ -n "${BUILT_BIN_DIR:-}" ]; then
    bin=$BUILT_BIN_DIR
else
    bin=$(swift build -c release --scratch-path "$SCRATCH" --static-swift-stdlib --show-bin-path)
fi
for product in inetinfo inetinfoctl; do
    [ -x "$bin/$product" ] || { echo "install.sh: $bin/$product is missing; run without --no-build" >&2; exit 1; }
done

# /usr/local in the shipped files stands for the install paths.
rewrite() {
    sed -e "s|/usr/local/etc/inetinfo|$SYSCONFDIR/inetinfo|g" -e "s|/usr/local/|$PREFIX/|g" "$1"
}

bindir=$DESTDIR$PREFIX/bin
wwwdir=$DESTDIR$PREFIX/share/inetinfo/www
docdir=$DESTDIR$PREFIX/share/doc/inetinfo
confdir=$DESTDIR$SYSCONFDIR/inetinfo
unitdir=$DESTDIR$UNITDIR

install -d -m 0755 "$bindir" "$wwwdir" "$docdir" "$confdir" "$unitdir"
install -m 0755 "$bin/inetinfo" "$bin/inetinfoctl" "$bindir/"

# The default web root: a fresh copy (files the site no longer has are removed).
rm -rf "${wwwdir:?}/"*
cp -R Sources/HTTPService/DefaultWebRoot/. "$wwwdir/"
find "$wwwdir" -type d -exec chmod 0755 {} + && find "$wwwdir" -type f -exec chmod 0644 {} +

# Every unit in units/ (the service and its socket units).
units=()
for unit in units/*.service units/*.socket; do
    [ -f "$unit" ] || continue
    units+=("${unit#units/}")
    rewrite "$unit" >"$unitdir/${unit#units/}.tmp"
    chmod 0644 "$unitdir/${unit#units/}.tmp"
    mv -f "$unitdir/${unit#units/}.tmp" "$unitdir/${unit#units/}"
done

# The manual pages (docs/man), compressed as Debian ships them (gzip -9n: no name, no time stamp).
mandir=$DESTDIR$PREFIX/share/man
for page in docs/man/*.[1-8]; do
    [ -f "$page" ] || continue
    section=${page##*.}
    install -d -m 0755 "$mandir/man$section"
    rewrite "$page" | gzip -9n >"$mandir/man$section/${page##*/}.gz.tmp"
    chmod 0644 "$mandir/man$section/${page##*/}.gz.tmp"
    mv -f "$mandir/man$section/${page##*/}.gz.tmp" "$mandir/man$section/${page##*/}.gz"
done

rewrite config/inetinfo.toml >"$confdir/inetinfo.toml.default"
chmod 0644 "$confdir/inetinfo.toml.default"
if [ ! -e "$confdir/inetinfo.toml" ]; then
    mv "$confdir/inetinfo.toml.default" "$confdir/inetinfo.toml"
elif cmp -s "$confdir/inetinfo.toml" "$confdir/inetinfo.toml.default"; then
    rm "$confdir/inetinfo.toml.default"
else
    echo "install.sh: kept the existing $confdir/inetinfo.toml; the new default is $confdir/inetinfo.toml.default" >&2
fi

install -m 0644 docs/operations.md "$docdir/operations.md"

cat >&2 <<EOF
install.sh: installed into ${DESTDIR:-/}
  $PREFIX/bin/inetinfo, $PREFIX/bin/inetinfoctl
  $UNITDIR/: ${units[*]}
  $SYSCONFDIR/inetinfo/inetinfo.toml
  $PREFIX/share/inetinfo/www/
  $PREFIX/share/man/man8/inetinfo.8.gz, inetinfoctl.8.gz; man5/inetinfo.toml.5.gz
  $PREFIX/share/doc/inetinfo/operations.md
Nothing was enabled or started. To run it (as root): systemctl daemon-reload &&
  systemctl enable --now inetinfo-smtp.socket inetinfo-http.socket
EOF
