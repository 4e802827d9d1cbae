#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, Rust unit and integration
# tests, then the end-to-end suite against real peers (Synapse, livekit-client in headless
# Chromium) on loopback.
#
# Needs: the Rust toolchain (with rustfmt and clippy), python3 with venv, openssl, nginx (the
# generated proxy config is checked with `nginx -t`), coturn's turnutils_uclient/turnutils_peer
# and turnserver (Debian's coturn package: the TURN test's client, echo peer and baseline); for the browser
# test also node >= 20 with npm and Debian's chromium (/usr/bin/chromium, or $RTCBOX_CHROMIUM);
# for the packaging tests podman (with runc) to build and run the image, coreutils' chroot and
# binutils' readelf (the static binary in an empty root, as root); for the ACME tests Debian's
# pebble (the test CA) and knot (knotd: the DNS server DNS-01 updates through RFC 2136); for
# the dependency check cargo-deny, for fuzzing the nightly toolchain and cargo-fuzz.
# Installs the Python test peers into a venv (default ~/.cache/rtcbox-venv, reused when the
# requirements did not change) and the browser test's npm packages into tests/browser/node_modules
# (reused while package-lock.json is unchanged; playwright-core never downloads a browser). Cargo's
# target dir defaults to ~/.cache/rtcbox-target so a fresh clone reuses earlier builds.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rtcbox-target}"
venv="${RTCBOX_TEST_VENV:-$HOME/.cache/rtcbox-venv}"
requirements=tests/e2e/requirements.txt

step() { printf '\n==> %s\n' "$*"; }

step "Python test peers ($venv)"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$requirements"
    echo "$want" > "$stamp"
fi

step "Browser test peers (tests/browser)"
browser=tests/browser
if command -v npm >/dev/null 2>&1; then
    # npm ci empties node_modules first, so the stamp only survives a completed install.
    npm_stamp="$browser/node_modules/.package-lock.sha256"
    npm_want=$(cat "$browser/package-lock.json" "$browser/package.json" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_want" ]; then
        (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
        echo "$npm_want" > "$npm_stamp"
    fi
else
    echo "npm not found: the browser end-to-end test will be skipped (fails under CI=true)"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked

# Licences, banned crates and sources of the dependency tree (deny.toml); advisories need the
# RustSec database, which CI cannot reach (docs/dependencies.md).
step "cargo deny check licenses bans sources"
if cargo deny --version >/dev/null 2>&1; then
    cargo deny --locked check --hide-inclusion-graph licenses bans sources
elif [ "${CI:-}" = "true" ]; then
    echo "cargo-deny is missing (cargo install cargo-deny --locked)" >&2
    exit 1
else
    echo "cargo-deny not installed: skipped (cargo install cargo-deny --locked; fails under CI=true)"
fi

# Every cargo-fuzz target for 15 s from the seed corpus (docs/fuzzing.md); the fuzz crate
# builds in $CARGO_TARGET_DIR/fuzz with the nightly toolchain.
step "fuzzing (fuzz/run.sh, 15 s per target)"
if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
    fuzz/run.sh 15
elif [ "${CI:-}" = "true" ]; then
    echo "fuzzing needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    exit 1
else
    echo "nightly or cargo-fuzz not installed: fuzzing skipped (fails under CI=true)"
fi

# The artefacts users install, built as a release would build them: the static binary, the
# tarball, the Synology package and (where podman, buildah or docker can build) the image.
# The packaging tests below run exactly these.
step "release artefacts (packaging/build-release.sh)"
dist="${RTCBOX_DIST:-$CARGO_TARGET_DIR/dist}"
rm -rf "$dist"
image=()
if command -v podman >/dev/null 2>&1 || command -v buildah >/dev/null 2>&1; then
    image=(--image)
else
    echo "no podman or buildah: the image is not built and its test will be skipped (fails under CI=true)"
fi
packaging/build-release.sh --out "$dist" "${image[@]}"

step "end-to-end tests (real peers, loopback only)"
RTCBOX_BIN="$CARGO_TARGET_DIR/debug/rtcbox" RTCBOX_DIST="$dist" \
    "$venv/bin/python" -m pytest tests/e2e -v
