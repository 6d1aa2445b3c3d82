#!/usr/bin/env bash
# Installs what `just run` and `just test` need and the machine lacks:
# `just` itself, and PostgreSQL's server binaries. Safe to run again.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"
log() { printf '%s\n' "bootstrap: $*" >&2; }

if ! command -v just >/dev/null 2>&1; then
    log "installing just"
    # PyPI's rust-just ships a prebuilt binary (seconds); crates.io builds it (minutes).
    if ! python3 -m pip install --quiet --user rust-just 2>/dev/null || [ ! -x "$HOME/.local/bin/just" ]; then
        cargo install --locked just
    fi
fi
# ~/.cargo/bin is on every Rust developer's PATH; ~/.local/bin may not be.
if [ -x "$HOME/.local/bin/just" ] && [ ! -e "$HOME/.cargo/bin/just" ]; then
    mkdir -p "$HOME/.cargo/bin" && ln -s "$HOME/.local/bin/just" "$HOME/.cargo/bin/just"
fi

have_pg() {
    command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if ! have_pg; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing PostgreSQL (Debian package)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        log "PostgreSQL's server binaries are missing; install them with: sudo apt-get install -y postgresql"
        exit 1
    fi
fi
log "ready: $(just --version), $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -1)"
