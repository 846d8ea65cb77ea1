#!/usr/bin/env bash
# The system packages the Python install needs, installed only where missing (idempotent; `make` runs it
# before pip). pyfuse3, which `tdxsim guest --tsm` uses, ships only as source: it builds against libfuse 3
# (libfuse3-dev: headers and fuse3.pc, found through pkg-config) with a C compiler, and mounts through
# /dev/fuse (fuse3: fusermount3, the FUSE kernel helper). docs/cli.md "tdxsim guest" has the command.
# postgresql: the server binaries (initdb, pg_ctl, postgres under /usr/lib/postgresql/VERSION/bin) from which
# the test suite and `tdxsim fleet up` start a throwaway cluster for verifier replicas (tdxsim/pgcluster.py);
# the package's own cluster service is not needed and tdxsim never uses it.
#
# Nothing happens when every package is there (dpkg -s), so a machine that already has them, or one whose
# libfuse 3 comes from elsewhere (pkg-config finds fuse3, no dpkg), never needs root. Otherwise, as root (or
# with password-less sudo): `apt-get update` once, then `apt-get install -y --no-install-recommends …` of the
# missing ones.
set -euo pipefail

PACKAGES=(fuse3 libfuse3-dev pkg-config gcc postgresql)

if ! command -v dpkg >/dev/null 2>&1; then
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists fuse3; then
        exit 0
    fi
    echo "system-packages: no dpkg and pkg-config finds no fuse3: install libfuse 3 with its headers," \
        "pkg-config, a C compiler and PostgreSQL's server with this system's package manager" >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run=(sudo -n)
else
    echo "system-packages: missing ${missing[*]}; as root run:" \
        "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
echo "system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${run[@]}" apt-get update -qq
"${run[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
