#!/usr/bin/env bash
# Makes the local OpenID Connect provider (scripts/oidc/provider.mjs, on npm's
# oidc-provider) available and prints `export OIDC_ISSUER=…` (and
# OIDC_AUDIENCE, and the pages' client OIDC_WEB_CLIENT_ID/SECRET) for eval. Development and tests only.
#
# Installs the npm packages on first use (`npm ci` from scripts/oidc's lock
# into .local/oidc/node_modules, never under scripts/), then starts the `dev`
# instance detached, on a free port from 59300 (or OIDC_PORT), with its keys,
# pid, port and log under .local/oidc/dev. The provider also reads
# OIDC_AUDIENCE, OIDC_ACCOUNTS, OIDC_WEB_REDIRECT_URIS… (see provider.mjs)
# when it starts: `stop` first to apply new values.
#
# Usage: eval "$(scripts/oidc.sh)"            # install and start if needed
#        eval "$(scripts/oidc.sh install)"    # only install; export OIDC_DEPS
#        scripts/oidc.sh rotate [RSA|EC|OKP]  # new signing key first, reload; prints its kid
#        scripts/oidc.sh prune                # drop all but the newest key of each type, reload
#        scripts/oidc.sh stop
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/scripts/oidc"
base="$root/.local/oidc"
dir="$base/dev"
keys="$dir/keys.json"
log() { printf '%s\n' "oidc.sh: $*" >&2; }

# Free = bindable (an outgoing connection may hold a port nobody listens on).
bindable() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

free_port() {
    local port
    for port in $(seq "$1" $(( $1 + 100 ))); do
        if bindable "$port"; then echo "$port"; return; fi
    done
    log "no free port from $1"; exit 1
}

answers() { # port -> true once discovery answers (the provider is built)
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/.well-known/openid-configuration" 2>/dev/null
}

alive() { # a zombie (exited, not yet reaped by init) is not alive
    local pid
    [ -f "$dir/pid" ] && pid=$(cat "$dir/pid") && kill -0 "$pid" 2>/dev/null \
        && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]
}

install() {
    command -v node >/dev/null || { log "node is missing (Node.js 20.18+; oidc-provider asks for 22+)"; exit 1; }
    # Reinstall whenever the committed lock changed since the last install.
    if [ ! -d "$base/node_modules/oidc-provider" ] || ! cmp -s "$src/package-lock.json" "$base/package-lock.json"; then
        log "installing oidc-provider (npm ci into $base)"
        mkdir -p "$base"
        cp "$src/package.json" "$src/package-lock.json" "$base/"
        npm ci --prefix "$base" --no-audit --no-fund --loglevel=error >&2
    fi
}

# SIGHUP makes the provider re-read the keys file; it logs `reloaded KIDS`
# (or `reload failed`, keeping the old keys) when done.
reload() {
    alive || return 0
    local file="$dir/provider.log" pattern='^reloaded |reload failed' before
    before=$(grep -cE "$pattern" "$file" || true)
    kill -HUP "$(cat "$dir/pid")"
    for _ in $(seq 50); do
        if [ "$(grep -cE "$pattern" "$file" || true)" -gt "$before" ]; then
            grep -E "$pattern" "$file" | tail -n 1 | grep -q '^reloaded ' && return 0
            log "the provider kept its old keys; see $file"; exit 1
        fi
        sleep 0.1
    done
    log "the provider did not reload; see $file"; exit 1
}

case "${1:-start}" in
stop)
    if alive; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        for _ in $(seq 50); do alive || break; sleep 0.1; done
        log "stopped the provider in $dir"
    fi
    rm -f "$dir/pid"
    exit 0 ;;
install)
    install
    printf 'export OIDC_DEPS=%q\n' "$base"
    exit 0 ;;
rotate|prune)
    install
    if [ "$1" = rotate ]; then
        kid=$(node "$src/keys.mjs" rotate "$keys" "${2:-RSA}")
        log "new signing key $kid first in $keys; the old ones still verify until \`prune\`"
        reload
        echo "$kid"
    else
        kids=$(node "$src/keys.mjs" prune "$keys")
        reload
        log "kept $(tr '\n' ' ' <<<"$kids")"
    fi
    exit 0 ;;
start) ;;
*) log "unknown command $1 (start|install|rotate|prune|stop)"; exit 2 ;;
esac

install
mkdir -p "$dir"
port=""
[ -f "$dir/port" ] && port=$(cat "$dir/port")
if ! { alive && [ -n "$port" ] && answers "$port"; }; then
    # Keep the last port when it is free (the issuer is in the service's config).
    for attempt in 1 2 3; do
        if [ -n "${OIDC_PORT:-}" ]; then port=$OIDC_PORT
        elif [ -z "$port" ] || [ "$attempt" -gt 1 ] || ! bindable "$port"; then
            port=$(free_port 59300)
        fi
        echo "$port" > "$dir/port"
        log "starting the provider on 127.0.0.1:$port"
        # Its own session, detached from our stdout (which `eval "$(…)"` reads to the end).
        OIDC_PORT=$port OIDC_KEYS=$keys OIDC_DEPS=$base \
            setsid nohup node "$src/provider.mjs" </dev/null >"$dir/provider.log" 2>&1 &
        echo $! > "$dir/pid"
        printf '%s\n' "${OIDC_AUDIENCE:-orders-api}" > "$dir/audience"
        for _ in $(seq 100); do
            answers "$port" && break
            alive || break
            sleep 0.1
        done
        answers "$port" && break
        if ! alive && grep -q EADDRINUSE "$dir/provider.log" && [ -z "${OIDC_PORT:-}" ] && [ "$attempt" -lt 3 ]; then
            continue
        fi
        log "the provider did not answer on $port; see $dir/provider.log"; tail -n 20 "$dir/provider.log" >&2; exit 1
    done
fi
printf 'export OIDC_ISSUER=%q\n' "http://127.0.0.1:$port"
printf 'export OIDC_AUDIENCE=%q\n' "$(cat "$dir/audience" 2>/dev/null || echo orders-api)"
# The pages' sign-in client (provider.mjs registers it; development secret).
printf 'export OIDC_WEB_CLIENT_ID=%q\n' orders-web
printf 'export OIDC_WEB_CLIENT_SECRET=%q\n' orders-web-secret
