#!/usr/bin/env bash
# The lab: several hosts on this one machine, each a network namespace with an
# address of its own, joined by a bridge. Root only (namespaces, links).
#
#   scripts/lab.sh up          everything below, in order, then waits until an order
#                              placed through the load balancer shows on the board
#   scripts/lab.sh install     what the hosts run, from Debian: etcd, Patroni, HAProxy
#                              (and Tansu with its PostgreSQL engine, the service's
#                              release build, the provider's npm packages)
#   scripts/lab.sh net-up      the hosts and their links (nothing runs on them yet)
#   scripts/lab.sh db-up       etcd on db1-db3, Patroni (PostgreSQL 15, strict synchronous
#                              replication, automatic failover) on db1-db3,
#                              HAProxy on lb routing :5432 to the primary
#   scripts/lab.sh idp-up      the lab's CA, and the OpenID Connect provider on idp
#                              (https://idp:8443, its certificate signed by that CA)
#   scripts/lab.sh kafka-up    Tansu on kafka1 and kafka2, both on one PostgreSQL
#                              storage in the replicated cluster (deploy/tansu)
#   scripts/lab.sh app-up      `orders serve` and `orders work` on app1 and app2, from
#                              deploy/env; HAProxy on lb routes http://lb/coffee/ to them
#   scripts/lab.sh reset-app   the service's database and topic emptied (apps restarted)
#   scripts/lab.sh chaos       faults one at a time under load, a verdict for each
#                              (tests/src/bin/lab_chaos); exits non-zero on any
#                              violated invariant
#   scripts/lab.sh smoke       up, one app host killed under load (its verdict and the
#                              invariants), down: the short run (docs/deploy.md)
#   scripts/lab.sh check-pages the browser checks (tests/browser/pages.mjs) on client,
#                              against http://lb/coffee/
#   scripts/lab.sh stop HOST [NAME]   stop what runs on HOST (or only NAME: etcd, patroni, …)
#   scripts/lab.sh status      each host: address, link, what runs on it
#   scripts/lab.sh cut HOST    take HOST's link down (it keeps running, cut off)
#   scripts/lab.sh mend HOST   bring it back
#   scripts/lab.sh run HOST CMD…   run a command on HOST
#   scripts/lab.sh down        stop everything on the hosts, remove them
#
# Addresses: 10.77.0.0/24, used only inside the namespaces this script makes
# (the bridge holds .1, so that this machine reaches the lab); nothing else
# is ever a target. Names resolve on every host through /etc/netns/*/hosts.
set -euo pipefail

NET=10.77.0
BRIDGE=orders-lab
# host=last octet, in the order they come up.
HOSTS=(lb=10 app1=11 app2=12 db1=21 db2=22 db3=23 kafka1=31 kafka2=32 idp=40 client=50)

say() { echo "lab.sh: $*" >&2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The hosts' disks: one folder per host.
LAB_DIR=${LAB_DIR:-/var/lib/orders-lab}
# The lab's database passwords (the lab's own, on addresses nothing else reaches).
SUPERUSER_PASSWORD=lab-postgres
REPLICATION_PASSWORD=lab-replicator
# Also in deploy/env/orders.env and tansu.env (DATABASE_URL, STORAGE_ENGINE).
ORDERS_PASSWORD=lab-orders
TANSU_PASSWORD=lab-tansu
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "the lab makes network namespaces and links: run it as root"
  command -v ip >/dev/null || die "no ip command (Debian: apt-get install iproute2)"
}

# The hosts and their links; the replicated PostgreSQL cluster on them.
# shellcheck source=scripts/lab/network.sh
. "$ROOT/scripts/lab/network.sh"
# shellcheck source=scripts/lab/database.sh
. "$ROOT/scripts/lab/database.sh"

# Debian's packages, installed without starting their services on this
# machine (the lab starts them on its hosts, from deploy/'s files).
install() {
  need_root
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v patroni >/dev/null || missing+=(patroni)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v psql >/dev/null || [ -x /usr/lib/postgresql/15/bin/psql ] || missing+=(postgresql-client)
  install_project
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (Debian)"
  local policy=/usr/sbin/policy-rc.d created=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { [ -n "$created" ] && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
  [ -n "$created" ] && rm -f "$policy"
  return 0
}

# What the lab runs of this project's own: the service's release build,
# Tansu with its PostgreSQL engine, the provider's npm packages.
install_project() {
  local tansu
  tansu=$("$ROOT/scripts/kafka.sh" install | sed -n "s/^export TANSU_BIN=//p" | tr -d "'")
  [ -x "$tansu" ] || die "no Tansu binary (scripts/kafka.sh install)"
  mkdir -p "$LAB_DIR"
  echo "$tansu" > "$LAB_DIR/tansu-bin"
  "$ROOT/scripts/oidc.sh" install >/dev/null
  say "building the service (release)"
  (cd "$ROOT" && SQLX_OFFLINE=true cargo build --release -q -p services --bin orders) >&2
}

# Runs `cmd…` on HOST in the background as NAME: its log in
# $LAB_DIR/HOST/NAME.log, its pid in $LAB_DIR/HOST/NAME.pid.
start_on() {
  local host=$1 name=$2; shift 2
  local dir="$LAB_DIR/$host"
  mkdir -p "$dir"
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    return 0
  fi
  nohup ip netns exec "$(ns "$host")" "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! > "$dir/$name.pid"
  # Not this shell's job any more: a fault's kill -9 is not reported here.
  disown $!
}

# Stops NAME on HOST (everything on HOST without NAME), and returns once it
# has exited: SIGTERM, then SIGKILL after 10 s.
stop_on() {
  local host=$1 name=${2:-} f pid i
  for f in "$LAB_DIR/$host"/${name:-*}.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

# The lab's own CA, and a certificate for idp that it signed (openssl).
ca_up() {
  local dir="$LAB_DIR/ca"
  [ -f "$dir/idp.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -days 30 -subj "/CN=orders lab CA" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -nodes -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -subj "/CN=idp" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout idp.key -out idp.csr 2>/dev/null
    printf 'subjectAltName=DNS:idp,IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
      "$(address idp)" > idp.ext
    openssl x509 -req -in idp.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile idp.ext -out idp.pem 2>/dev/null
    chmod 644 ca.pem idp.pem; chmod 600 ca.key idp.key
  )
  say "the lab's CA: $dir/ca.pem"
}

idp_up() {
  need_root
  ca_up
  mkdir -p "$LAB_DIR/idp"
  start_on idp provider env OIDC_HOST="$(address idp)" OIDC_PORT=8443 OIDC_ISSUER_HOST=idp \
    OIDC_TLS_CERT="$LAB_DIR/ca/idp.pem" OIDC_TLS_KEY="$LAB_DIR/ca/idp.key" \
    OIDC_KEYS="$LAB_DIR/idp/keys.json" OIDC_DEPS="$ROOT/.local/oidc" \
    OIDC_WEB_REDIRECT_URIS=http://lb/coffee/auth/callback \
    OIDC_WEB_POST_LOGOUT_REDIRECT_URIS=http://lb/coffee/ \
    node "$ROOT/scripts/oidc/provider.mjs"
  local i
  for i in $(seq 1 60); do
    ip netns exec "$(ns client)" curl -sf --max-time 2 --cacert "$LAB_DIR/ca/ca.pem" \
      https://idp:8443/.well-known/openid-configuration >/dev/null 2>&1 && { say "provider: https://idp:8443"; return 0; }
    sleep 1
  done
  die "the provider did not answer on https://idp:8443: see $LAB_DIR/idp/provider.log"
}


# Runs a command with the environment deploy/env's FILES give (as the
# systemd units load them) and nothing else of the caller's:
#   clean_env with-env FILE… -- COMMAND…
clean_env() { echo env -i PATH="$PATH" HOME="$HOME" bash "$ROOT/scripts/lab.sh"; }
with_env() {
  while [ "$1" != -- ]; do
    set -a; . "$ROOT/deploy/env/$1"; set +a
    shift
  done
  shift
  exec "$@"
}

kafka_up() {
  need_root
  local tansu host
  tansu=$(cat "$LAB_DIR/tansu-bin" 2>/dev/null) || die "run scripts/lab.sh install first"
  owned_database tansu "$TANSU_PASSWORD"
  ip netns exec "$(ns client)" env PGPASSWORD="$TANSU_PASSWORD" \
    psql -h lb -U tansu -d tansu -v ON_ERROR_STOP=1 -q -f "$ROOT/deploy/tansu/storage.sql" >&2
  for host in kafka1 kafka2; do
    # shellcheck disable=SC2046
    start_on "$host" tansu $(clean_env) with-env tansu.env -- \
      env ADVERTISED_LISTENER_URL="tcp://$host:9092" "$tansu" broker --silent
  done
  local i
  for host in kafka1 kafka2; do
    for i in $(seq 1 30); do
      ip netns exec "$(ns client)" bash -c "exec 3<>/dev/tcp/$host/9092" 2>/dev/null && break
      sleep 1
    done
  done
  say "brokers: kafka1:9092, kafka2:9092 (storage: the cluster's tansu database)"
}

app_up() {
  need_root
  owned_database orders "$ORDERS_PASSWORD"
  local host bin="$ROOT/target/release/orders"
  [ -x "$bin" ] || die "no $bin: run scripts/lab.sh install first"
  for host in app1 app2; do
    # shellcheck disable=SC2046
    start_on "$host" serve $(clean_env) with-env orders.env serve.env -- "$bin" serve
    # shellcheck disable=SC2046
    start_on "$host" work $(clean_env) with-env orders.env work.env -- "$bin" work
  done
  local i
  for i in $(seq 1 120); do
    [ "$(ip netns exec "$(ns client)" curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://lb/coffee/readyz)" = 200 ] \
      && { say "the service: http://lb/coffee/ (app1, app2)"; return 0; }
    sleep 1
  done
  die "http://lb/coffee/readyz did not answer 200 within 120 s: see $LAB_DIR/app*/serve.log"
}

# A fresh start for the service: its processes stopped, its database dropped
# (created again by app_up, migrated by the processes), its topic deleted.
reset_app() {
  need_root
  local host i tansu
  tansu=$(cat "$LAB_DIR/tansu-bin" 2>/dev/null) || die "run scripts/lab.sh install first"
  for host in app1 app2; do stop_on "$host"; done
  for i in $(seq 1 50); do
    [ -z "$(ip netns pids "$(ns app1)")$(ip netns pids "$(ns app2)")" ] && break
    sleep 0.2
  done
  lab_psql -qc "DROP DATABASE IF EXISTS orders WITH (FORCE)"
  # shellcheck disable=SC1090
  local topic; topic=$(. "$ROOT/deploy/env/orders.env"; echo "$KAFKA_TOPIC")
  ip netns exec "$(ns client)" "$tansu" topic delete --broker tcp://kafka1:9092 "$topic" >/dev/null 2>&1 || true
  app_up
}

# `just lab chaos`: the runner on the client host, through the load balancer.
chaos() {
  need_root
  (cd "$ROOT" && SQLX_OFFLINE=true cargo build --release -q -p services --bin orders -p e2e --bin lab-chaos) >&2
  reset_app
  ip netns exec "$(ns client)" env LAB_DIR="$LAB_DIR" "$ROOT/target/release/lab-chaos" \
    --lab-script "$ROOT/scripts/lab.sh" --orders-bin "$ROOT/target/release/orders" "$@"
}

# The pages in a real browser on `client`, through the load balancer, under
# the prefix: the same script the test suite runs against two processes.
check_pages() {
  need_root
  local bin="$ROOT/target/release/orders" spki psql
  eval "$("$ROOT/scripts/browser.sh")"
  # The provider's key: the browser trusts that certificate, and no other
  # that the lab's CA did not sign into its store.
  spki=$(openssl x509 -in "$LAB_DIR/ca/idp.pem" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)
  psql=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
  # shellcheck disable=SC2046
  ip netns exec "$(ns client)" $(clean_env) with-env orders.env -- \
    "$bin" menu set "$ROOT/scripts/sample-menu.json" >&2
  # shellcheck disable=SC2046
  ip netns exec "$(ns client)" $(clean_env) with-env orders.env -- \
    "$bin" stores set "$ROOT/scripts/sample-stores.json" >&2
  ip netns exec "$(ns client)" env CHROMIUM="$CHROMIUM" BROWSER_DEPS="$BROWSER_DEPS" \
    APP_A=http://lb/coffee APP_B=http://lb/coffee TRUST_SPKI="$spki" PSQL="$psql" \
    DATABASE_URL="postgres://orders:$ORDERS_PASSWORD@lb:5432/orders" \
    node "$ROOT/tests/browser/pages.mjs"
}

up() {
  install
  net_up
  db_up
  idp_up
  kafka_up
  app_up
}

# `just lab smoke`: the short run a CI could afford (it does not: see
# docs/deploy.md for its cost): the lab up, an order through the load
# balancer under load while one app host's processes are killed (-9) and
# restarted, its verdict and the invariants, the lab down again.
smoke() {
  need_root
  trap down EXIT
  up
  chaos --only "app1: every process killed" --converge-timeout 60
}


case "${1:-}" in
  up) up ;;
  install) install ;;
  net-up) net_up ;;
  db-up) db_up ;;
  idp-up) idp_up ;;
  kafka-up) kafka_up ;;
  app-up) app_up ;;
  check-pages) check_pages ;;
  reset-app) reset_app ;;
  chaos) shift; chaos "$@" ;;
  smoke) smoke ;;
  stop) stop_on "${2:?which host}" "${3:-}" ;;
  status) status ;;
  cut) cut "${2:?which host}" ;;
  mend) mend "${2:?which host}" ;;
  run) shift; run_on "${1:?which host}" "${@:2}" ;;
  with-env) shift; with_env "$@" ;;
  down) down ;;
  *) sed -n '2,37p' "$0" >&2; exit 2 ;;
esac
