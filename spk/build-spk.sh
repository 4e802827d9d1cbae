#!/bin/sh
# Builds the Synology DSM 7 package from a static rtcbox binary:
#
#   spk/build-spk.sh --binary PATH --arch x86_64|armv8 [--out DIR] [--build N] [--version X.Y.Z]
#
# writes DIR/rtcbox-<version>-<build>-<arch>.spk and its .sha256 (DIR defaults to dist/ in the
# repository). The package version is "<rtcbox version>-<build>" (build defaults to 1); the
# rtcbox version is the second word of `rtcbox --version`, or --version when the binary cannot
# run here (an armv8 binary on an x86_64 machine), or else Cargo.toml's.
#
# The result is byte-for-byte reproducible: both archives are ustar, root-owned, sorted, with
# every mtime at SOURCE_DATE_EPOCH (default: the last commit's time), and package.tgz is
# `gzip -n`. The outer archive is an uncompressed tar, as DSM requires.
# Needs GNU tar, gzip, md5sum, sha256sum, od.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
pkg=rtcbox

die() {
    echo "build-spk.sh: $*" >&2
    exit 1
}

binary="" arch="" out="$repo/dist" build=1 version=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --arch) arch=${2:?--arch needs x86_64 or armv8}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --build) build=${2:?--build needs a number}; shift 2 ;;
        --version) version=${2:?--version needs X.Y.Z}; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$binary" ] || die "--binary PATH is required"
[ -f "$binary" ] || die "no such file: $binary"

# The ELF header says which machine the binary is for (e_machine: bytes 18-19, little endian).
case "$arch" in
    x86_64) want_machine=62 ;;   # EM_X86_64
    armv8) want_machine=183 ;;   # EM_AARCH64
    *) die "--arch must be x86_64 or armv8, not '${arch}'" ;;
esac
header=$(od -An -tu1 -N20 "$binary" | tr -s ' \n' '  ')
set -- $header
[ "$#" -ge 20 ] && [ "$1 $2 $3 $4" = "127 69 76 70" ] || die "$binary is not an ELF executable"
[ "$5" = 2 ] || die "$binary is not a 64-bit ELF executable"
machine=$(( ${19} + 256 * ${20} ))
[ "$machine" = "$want_machine" ] \
    || die "$binary is for ELF machine $machine, not $arch (expected machine $want_machine)"

if [ -z "$version" ]; then
    if reported=$("$binary" --version 2>/dev/null); then
        # "rtcbox 0.1.0" or "rtcbox 0.1.0 (git abc1234)"
        set -- $reported
        version=${2:-}
    else
        version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
    fi
fi
numeric() { # <what> <value>: dot-separated numbers, each below 2^31
    case "$2" in
        "" | .* | *. | *..* | *[!0-9.]*) die "$1 '$2' is not numeric (DSM needs digits and dots only, e.g. 0.1.0; no -rc or +meta)" ;;
    esac
    old_ifs=$IFS
    IFS=.
    for part in $2; do
        [ "${#part}" -le 10 ] && [ "$part" -le 2147483647 ] || die "$1 '$2': $part is above 2^31-1"
    done
    IFS=$old_ifs
}
numeric "rtcbox version" "$version"
case "$build" in "" | *[!0-9]*) die "--build '$build' is not a number" ;; esac
numeric "build number" "$build"
spk_version="$version-$build"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1577836800)
fi
case "$SOURCE_DATE_EPOCH" in "" | *[!0-9]*) die "SOURCE_DATE_EPOCH must be a number of seconds" ;; esac

for script in "$here"/scripts/* "$here"/WIZARD_UIFILES/*.sh "$here"/payload/bin/rtcbox-service; do
    if grep -q "$(printf '\r')" "$script"; then die "$script has CRLF line endings"; fi
    sh -n "$script" || die "$script: syntax error"
done

export LC_ALL=C TZ=UTC COPYFILE_DISABLE=1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
payload="$stage/payload"
spk="$stage/spk"
mkdir -p "$payload/bin" "$spk"

# Payload: unpacked by DSM to /var/packages/rtcbox/target.
cp "$binary" "$payload/bin/rtcbox"
cp -R "$here/payload/." "$payload/"
# Outer members.
cp -R "$here/scripts" "$here/conf" "$here/WIZARD_UIFILES" "$spk/"
cp "$here/PACKAGE_ICON.PNG" "$here/PACKAGE_ICON_256.PNG" "$spk/"
[ -f "$repo/LICENSE" ] && cp "$repo/LICENSE" "$spk/LICENSE"

# Modes are set, never inherited from the checkout or the umask.
for tree in "$payload" "$spk"; do
    find "$tree" -type d -exec chmod 0755 {} +
    find "$tree" -type f -exec chmod 0644 {} +
done
chmod 0755 "$payload/bin/rtcbox" "$payload/bin/rtcbox-service" "$spk"/scripts/* "$spk"/WIZARD_UIFILES/*.sh

mktar() { # <dir> <out.tar>: ustar, root-owned, fixed mtime, sorted
    (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | sort) > "$stage/list"
    tar --format=ustar --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        --no-recursion -C "$1" -T "$stage/list" -cf "$2"
}

mktar "$payload" "$stage/package.tar"
gzip -n -9 < "$stage/package.tar" > "$spk/package.tgz"
# KB unpacked, from the file sizes (du would depend on the file system).
bytes=$(find "$payload" -type f -exec cat {} + | wc -c)
extractsize=$(( (bytes + 1023) / 1024 ))
checksum=$(md5sum "$spk/package.tgz" | cut -d' ' -f1)

maintainer_url=${RTCBOX_SPK_MAINTAINER_URL:-https://github.com/rtcbox/rtcbox}
support_url=${RTCBOX_SPK_SUPPORT_URL:-https://github.com/rtcbox/rtcbox/issues}
cat > "$spk/INFO" <<EOF
package="$pkg"
version="$spk_version"
os_min_ver="7.0-40761"
arch="$arch"
displayname="rtcbox"
description="The MatrixRTC backend for Element Call and Element X group calls in one package: a LiveKit-compatible SFU, the MatrixRTC authorization service (lk-jwt-service compatible), a TURN server and an admin panel with a setup wizard on port 8089."
maintainer="rtcbox developers"
maintainer_url="$maintainer_url"
support_url="$support_url"
distributor="rtcbox developers"
distributor_url="$maintainer_url"
dsmuidir="ui"
dsmappname="org.rtcbox.admin"
adminprotocol="http"
adminport="8089"
adminurl=""
checkport="yes"
ctl_stop="yes"
precheckstartstop="yes"
silent_upgrade="yes"
support_move="yes"
thirdparty="yes"
extractsize="$extractsize"
checksum="$checksum"
EOF

mkdir -p "$out"
name="$pkg-$spk_version-$arch.spk"
mktar "$spk" "$stage/$name"
mv -f "$stage/$name" "$out/$name"
(cd "$out" && sha256sum "$name" > "$name.sha256")
echo "$out/$name"
