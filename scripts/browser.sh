#!/usr/bin/env bash
# Makes the pages' browser tests runnable and prints `export …` lines for
# eval: CHROMIUM (the browser binary) and BROWSER_DEPS (where playwright-core
# and axe-core are installed).
#
# - The browser is Debian's `chromium` package, installed with apt-get when it
#   is missing (as root; otherwise it says what to run). Nothing downloads a
#   browser: playwright-core drives the system's through its executablePath.
# - The npm packages are installed with `npm ci` from tests/browser's lock
#   into .local/browser/node_modules (never under tests/), again whenever the
#   committed lock changes.
#
# Usage: eval "$(scripts/browser.sh)"
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tests/browser"
base="$root/.local/browser"
log() { printf '%s\n' "browser.sh: $*" >&2; }

# The real binary, not Debian's wrapper script (which reads
# /etc/chromium.d and adds flags of its own): the tests choose every flag.
find_chromium() {
    local candidate
    for candidate in /usr/lib/chromium/chromium "$(command -v chromium 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! chromium=$(find_chromium); then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing chromium (Debian package)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
        chromium=$(find_chromium) || { log "chromium did not install"; exit 1; }
    else
        log "chromium is missing; install it with: sudo apt-get install -y chromium"
        exit 1
    fi
fi

# The pages are Korean: without a Korean font every label renders as boxes
# (in screenshots, and to anyone checking them by eye). Debian's Nanum fonts.
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=ko 2>/dev/null)" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing a Korean font (fonts-nanum)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-nanum >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-nanum >&2; }
    else
        log "no Korean font: the pages' text shows as boxes; install one with: sudo apt-get install -y fonts-nanum"
    fi
fi

command -v node >/dev/null || { log "node is missing (Node.js 20+)"; exit 1; }
if [ ! -d "$base/node_modules/playwright-core" ] || ! cmp -s "$src/package-lock.json" "$base/package-lock.json"; then
    log "installing playwright-core and axe-core (npm ci into $base)"
    mkdir -p "$base"
    cp "$src/package.json" "$src/package-lock.json" "$base/"
    # playwright-core has no install script; and no browser is downloaded.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$base" --no-audit --no-fund --loglevel=error >&2
fi

printf 'export CHROMIUM=%q\n' "$chromium"
printf 'export BROWSER_DEPS=%q\n' "$base"
