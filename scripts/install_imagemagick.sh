#!/bin/sh
# Installs ImageMagick's runtime library for Wand when it is missing (Debian, as root); else says what to do.
set -e
PKG=libmagickwand-6.q16-6
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $PKG (ImageMagick's library, ~12 MB) for Wand..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKG >/dev/null
    exit 0
fi
echo "error: Wand needs ImageMagick's library: install $PKG (Debian/Ubuntu: sudo apt-get install --no-install-recommends $PKG; macOS: brew install imagemagick@6), then rerun" >&2
exit 1
