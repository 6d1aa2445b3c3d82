#!/usr/bin/env bash
# Prints only an access token (a JWT) for USER on stdout, issued by the local
# provider (started by scripts/oidc.sh if it is not running) through its
# development grant. Roles come from --role alone (no role: a customer);
# --stores names the stores a member of staff works at (comma-separated;
# none: the default store).
#
# Usage: scripts/token.sh USER [--role staff|operator] [--stores ID,ID] [--ttl SECONDS] [--alg RS256|ES256|EdDSA]
#   e.g. curl -H "Authorization: Bearer $(scripts/token.sh bob --role staff)" …
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '%s\n' "token.sh: $*" >&2; }
usage() { log "usage: scripts/token.sh USER [--role staff|operator] [--stores ID,ID] [--ttl SECONDS] [--alg RS256|ES256|EdDSA]"; exit 2; }

[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
params=(--data-urlencode "username=$1"); shift
while [ $# -gt 0 ]; do
    case "$1" in
        --role|--stores|--ttl|--alg) [ $# -ge 2 ] || usage; params+=(--data-urlencode "${1#--}=$2"); shift 2 ;;
        --role=*|--stores=*|--ttl=*|--alg=*) params+=(--data-urlencode "${1#--}"); shift ;;
        *) usage ;;
    esac
done

eval "$("$root/scripts/oidc.sh")"
# The provider validates every value (user name rule, role, ttl bounds): its
# error is the message.
response=$(curl -sS -u orders-dev:orders-dev-secret \
    --data-urlencode grant_type=urn:orders:params:oauth:grant-type:dev-token \
    "${params[@]}" "$OIDC_ISSUER/token")
node -e '
    const r = JSON.parse(process.argv[1]);
    if (!r.access_token) { console.error(`token.sh: ${r.error}: ${r.error_description ?? ""}`); process.exit(1); }
    console.log(r.access_token);
' "$response"
