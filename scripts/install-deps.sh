#!/bin/sh
# Installs what kvant's build and test suite use on a fresh Debian 12 machine (gcc and make assumed):
# OpenBLAS (optional dense algebra, detected by the Makefile) and clang (libFuzzer targets).
# Safe to run again; does nothing when everything is present or when not root.
set -e
need=""
ls /usr/lib/*/libopenblas.so >/dev/null 2>&1 || need="$need libopenblas-dev"
command -v clang >/dev/null 2>&1 || need="$need clang"
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        # optional dependencies: a failed install leaves a working (slower, fuzzer-less) build
        if ! { apt-get update -qq >/dev/null && apt-get install -y -qq $need >/dev/null; }; then
            echo "install-deps: could not install$need; continuing without" >&2
        fi
    else
        echo "install-deps: not root, skipping:$need (kvant builds without them)" >&2
    fi
fi
