# shellcheck shell=bash
# The lab's database, sourced by scripts/lab.sh (its globals and helpers):
# etcd and Patroni on db1-db3 (PostgreSQL 15, strict synchronous replication,
# automatic failover), HAProxy on lb routing :5432 to the primary, and psql
# through it for the roles and databases the other services own.

ETCD_HOSTS=(db1 db2 db3)
etcd_up() {
  local cluster="" host
  for host in "${ETCD_HOSTS[@]}"; do cluster+="${cluster:+,}$host=http://$(address "$host"):2380"; done
  for host in "${ETCD_HOSTS[@]}"; do
    local a; a=$(address "$host")
    local state=new
    [ -d "$LAB_DIR/$host/etcd/member" ] && state=existing
    start_on "$host" etcd etcd --name "$host" --data-dir "$LAB_DIR/$host/etcd" \
      --listen-client-urls "http://$a:2379,http://127.0.0.1:2379" --advertise-client-urls "http://$a:2379" \
      --listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
      --initial-cluster "$cluster" --initial-cluster-token orders-lab --initial-cluster-state "$state" \
      --heartbeat-interval 250 --election-timeout 2500 --enable-v2=true
  done
}

PATRONI_HOSTS=(db1 db2 db3)
patroni_up() {
  local host etcd=""
  for host in "${ETCD_HOSTS[@]}"; do etcd+="${etcd:+,}'$host:2379'"; done
  for host in "${PATRONI_HOSTS[@]}"; do
    local a; a=$(address "$host")
    mkdir -p "$LAB_DIR/$host/pg"
    chown postgres: "$LAB_DIR/$host/pg"; chmod 700 "$LAB_DIR/$host/pg"
    start_on "$host" patroni runuser -u postgres -- env \
      PATRONI_NAME="$host" \
      PATRONI_RESTAPI_LISTEN="$a:8008" PATRONI_RESTAPI_CONNECT_ADDRESS="$a:8008" \
      PATRONI_POSTGRESQL_LISTEN="$a:5432" PATRONI_POSTGRESQL_CONNECT_ADDRESS="$a:5432" \
      PATRONI_POSTGRESQL_DATA_DIR="$LAB_DIR/$host/pg/data" \
      PATRONI_POSTGRESQL_PGPASS="$LAB_DIR/$host/pg/pgpass" \
      PATRONI_ETCD_HOSTS="$etcd" \
      PATRONI_SUPERUSER_PASSWORD="$SUPERUSER_PASSWORD" \
      PATRONI_REPLICATION_PASSWORD="$REPLICATION_PASSWORD" \
      patroni "$ROOT/deploy/patroni.yml"
  done
}

# The primary's name as Patroni's REST API says, once there is one.
primary() {
  local host
  for host in "${PATRONI_HOSTS[@]}"; do
    if ip netns exec "$(ns client)" curl -sf --max-time 1 "http://$(address "$host"):8008/primary" >/dev/null 2>&1; then
      echo "$host"; return 0
    fi
  done
  return 1
}

# psql on the client host, through the load balancer, as the superuser.
lab_psql() {
  ip netns exec "$(ns client)" env PGPASSWORD="$SUPERUSER_PASSWORD" \
    psql -h lb -U postgres -d postgres "$@"
}

db_up() {
  need_root
  etcd_up
  patroni_up
  start_on lb haproxy env ORDERS_DEPLOY="$ROOT/deploy" haproxy -db -f "$ROOT/deploy/haproxy.cfg"
  local i
  for i in $(seq 1 120); do
    primary >/dev/null && break
    sleep 1
  done
  primary >/dev/null || die "no PostgreSQL primary after 120 s: see $LAB_DIR/db*/patroni.log"
  # The load balancer takes the primary in after two health checks.
  for i in $(seq 1 30); do
    lab_psql -Atqc "SELECT 1" >/dev/null 2>&1 && break
    sleep 1
  done
  say "PostgreSQL primary: $(primary); through the load balancer at lb:5432"
}

# A role and a database of its own in the cluster, once.
owned_database() { # name password
  lab_psql -Atqc "SELECT 1 FROM pg_roles WHERE rolname = '$1'" | grep -q 1 \
    || lab_psql -qc "CREATE ROLE $1 LOGIN PASSWORD '$2'"
  if lab_psql -Atqc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1; then
    lab_psql -qc "ALTER DATABASE $1 OWNER TO $1"
  else
    lab_psql -qc "CREATE DATABASE $1 OWNER $1"
  fi
}
