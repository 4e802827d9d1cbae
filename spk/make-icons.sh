#!/bin/sh
# Regenerates the package icons from the admin panel's icon (web/static/icon.svg). The PNGs are
# committed, so building the .spk needs no image tools; run this only after changing the SVG.
# Needs rsvg-convert (Debian: apt-get install librsvg2-bin).
#   PACKAGE_ICON.PNG      64x64    Package Center (DSM 7)
#   PACKAGE_ICON_256.PNG  256x256  Package Center (high resolution)
#   payload/ui/images/icon_N.png   the main-menu entry (ui/config "icon_{0}.png"; DSM picks N)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
svg="$here/../web/static/icon.svg"
command -v rsvg-convert >/dev/null 2>&1 || {
    echo "make-icons.sh: rsvg-convert not found (apt-get install librsvg2-bin)" >&2
    exit 1
}
render() { # <size> <out>
    rsvg-convert --width "$1" --height "$1" --keep-aspect-ratio --format png "$svg" > "$2.tmp"
    mv "$2.tmp" "$2"
}
render 64 "$here/PACKAGE_ICON.PNG"
render 256 "$here/PACKAGE_ICON_256.PNG"
for size in 16 24 32 48 64 72 256; do
    render "$size" "$here/payload/ui/images/icon_$size.png"
done
