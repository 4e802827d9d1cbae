#!/usr/bin/env bash
# Builds rtcbox's release artefacts for one target triple:
#
#   packaging/build-release.sh [--out DIR] [--image] [--no-spk] [TRIPLE]
#
#   DIR/TRIPLE/rtcbox                    the static binary (no shared libraries, no C resolver)
#   DIR/rtcbox-VERSION-TRIPLE.tar.gz     the binary with the systemd unit, README and install doc
#   DIR/rtcbox-VERSION-BUILD-ARCH.spk    the Synology DSM 7 package (x86_64 and armv8 only)
#   DIR/SHA256SUMS                       checksums of everything above
#   --image: the container image ghcr.io/rtcbox/rtcbox:VERSION, built from packaging/Containerfile
#            into the local storage of docker (when its engine runs), else podman, else buildah.
#
# TRIPLE defaults to this machine's (x86_64-unknown-linux-gnu here). Linux targets only:
#   x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu   glibc, linked statically (crt-static)
#   x86_64-unknown-linux-musl, aarch64-unknown-linux-musl musl (static by default)
# A target other than the host's needs its standard library (`rustup target add TRIPLE`) and a
# C cross toolchain for the C parts (SQLite, aws-lc): see docs/install-linux.md, "Building".
# DIR defaults to ./dist. The environment's CARGO_TARGET_DIR is honoured (default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist image=0 spk=1 triple=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --image) image=1; shift ;;
        --no-spk) spk=0; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-release: unknown option $1" >&2; exit 2 ;;
        *) triple=$1; shift ;;
    esac
done
host=$(rustc -vV | sed -n 's/^host: //p')
triple=${triple:-$host}

case "$triple" in
    x86_64-*-linux-*) arch=x86_64 oci_arch=amd64 spk_arch=x86_64 ;;
    aarch64-*-linux-*) arch=aarch64 oci_arch=arm64 spk_arch=armv8 ;;
    *) echo "build-release: $triple is not a Linux target rtcbox ships for (x86_64 or aarch64)" >&2
       exit 2 ;;
esac
if [ "$triple" != "$host" ] && ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    cat >&2 <<EOF
build-release: this toolchain has no standard library for $triple.
  rustup target add $triple
and a C cross compiler for it (for example Debian's gcc-aarch64-linux-gnu with
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc and
CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc), or cargo-zigbuild. See docs/install-linux.md.
EOF
    exit 2
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "${RTCBOX_GIT_COMMIT:-unknown}")
step() { printf '\n==> %s\n' "$*"; }

# crt-static for the target only (`--target` keeps it away from build scripts and proc macros,
# which must stay dynamic). musl targets are static already; the flag is harmless there.
# getrandom (0.3, 0.4) finds glibc's getrandom() with dlsym, which a static binary cannot do, and
# then falls back to /dev/urandom, which an empty root or a scratch image lacks: tell it to
# call the getrandom syscall (Linux >= 3.17; DSM 7 has 4.4).
step "static binary for $triple (rtcbox $version, git $commit)"
flags_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$flags_var=${!flags_var:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
cargo build --release --locked --target "$triple"
target_dir=${CARGO_TARGET_DIR:-target}
built="$target_dir/$triple/release/rtcbox"

mkdir -p "$out/$triple"
install -m 0755 "$built" "$out/$triple/rtcbox"
bin="$out/$triple/rtcbox"

# Static means no program interpreter (ld.so) in the ELF program headers.
if readelf -lW "$bin" | grep -q 'Requesting program interpreter'; then
    echo "build-release: $bin is dynamically linked" >&2
    readelf -dW "$bin" | grep NEEDED >&2 || true
    exit 1
fi
if [ "$arch" = "$(uname -m)" ]; then
    said=$("$bin" --version)
    [ "$said" = "rtcbox $version (git $commit)" ] || {
        echo "build-release: $bin --version says '$said', expected 'rtcbox $version (git $commit)'" >&2
        exit 1
    }
    echo "$said"
fi

# Reproducible archives: fixed owner and mtime, sorted names.
mtime=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
step "tarball"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="rtcbox-$version-$triple"
mkdir -p "$stage/$dir"
install -m 0755 "$bin" "$stage/$dir/rtcbox"
install -m 0644 packaging/systemd/rtcbox.service README.md docs/install-linux.md "$stage/$dir/"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$stage" -cf - "$dir" \
    | gzip -n -9 > "$out/$dir.tar.gz"
echo "$out/$dir.tar.gz"

if [ "$spk" = 1 ]; then
    step "Synology package ($spk_arch)"
    SOURCE_DATE_EPOCH=$mtime spk/build-spk.sh --binary "$bin" --arch "$spk_arch" --out "$out"
fi

if [ "$image" = 1 ]; then
    step "container image ghcr.io/rtcbox/rtcbox:$version (linux/$oci_arch)"
    context="$stage/image"
    mkdir -p "$context/linux-$oci_arch" "$context/data"
    install -m 0755 "$bin" "$context/linux-$oci_arch/rtcbox"
    args=(--file packaging/Containerfile --platform "linux/$oci_arch"
          --build-arg "TARGETARCH=$oci_arch" --build-arg "VERSION=$version"
          --build-arg "REVISION=$commit"
          --build-arg "CREATED=$(date -u -d "@$mtime" +%Y-%m-%dT%H:%M:%SZ)"
          --tag "ghcr.io/rtcbox/rtcbox:$version" "$context")
    # Docker's image format: an OCI image drops HEALTHCHECK, which docker and podman read.
    # A running Docker engine first (its users run the image there), then podman, then buildah.
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        docker build "${args[@]}"
    elif command -v podman >/dev/null 2>&1; then
        podman build --format docker "${args[@]}"
    elif command -v buildah >/dev/null 2>&1; then
        buildah build --format docker "${args[@]}"
    else
        echo "build-release: --image needs buildah, podman or docker" >&2
        exit 1
    fi
fi

step "checksums"
(cd "$out" && find . -maxdepth 2 -type f \( -name 'rtcbox' -o -name '*.tar.gz' -o -name '*.spk' \) \
    | sed 's|^\./||' | sort | xargs sha256sum > SHA256SUMS && cat SHA256SUMS)
