#!/usr/bin/env bash
# The lab: several hosts on this one machine, each a network namespace with an
# address of its own, joined by a bridge. Root only (namespaces, links).
#
#   scripts/lab.sh net-up      the hosts and their links (nothing runs on them yet)
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
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "the lab makes network namespaces and links: run it as root"
  command -v ip >/dev/null || die "no ip command (Debian: apt-get install iproute2)"
}

ns() { echo "lab-$1"; }
octet() {
  local pair
  for pair in "${HOSTS[@]}"; do
    [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return; }
  done
  die "no host $1 in the lab (hosts: ${HOSTS[*]%%=*})"
}
address() { echo "$NET.$(octet "$1")"; }

hosts_file() {
  echo "127.0.0.1 localhost"
  local pair
  for pair in "${HOSTS[@]}"; do echo "$NET.${pair#*=} ${pair%%=*}"; done
}

net_up() {
  need_root
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  local pair host n
  for pair in "${HOSTS[@]}"; do
    host=${pair%%=*}; n=${pair#*=}
    if ! ip netns list | grep -qx "$(ns "$host")\( .*\)\?"; then
      ip netns add "$(ns "$host")"
      ip link add "veth-$host" type veth peer name eth0 netns "$(ns "$host")"
      ip link set "veth-$host" master "$BRIDGE" up
      ip -n "$(ns "$host")" addr add "$NET.$n/24" dev eth0
      ip -n "$(ns "$host")" link set eth0 up
      ip -n "$(ns "$host")" link set lo up
    fi
    mkdir -p "/etc/netns/$(ns "$host")"
    hosts_file > "/etc/netns/$(ns "$host")/hosts"
  done
  say "hosts up on $NET.0/24: ${HOSTS[*]}"
}

run_on() {
  local host=$1; shift
  need_root
  ip netns exec "$(ns "$host")" "$@"
}

status() {
  local pair host link pids
  printf '%-8s %-12s %-6s %s\n' HOST ADDRESS LINK RUNNING
  for pair in "${HOSTS[@]}"; do
    host=${pair%%=*}
    if ! ip netns list 2>/dev/null | grep -q "^$(ns "$host")\b"; then
      printf '%-8s %-12s %-6s %s\n' "$host" "$(address "$host")" "-" "(not up)"
      continue
    fi
    link=$(ip -br link show "veth-$host" 2>/dev/null | awk '{print $2}' | tr 'A-Z' 'a-z')
    pids=$(ip netns pids "$(ns "$host")" 2>/dev/null | xargs -r -n1 -I{} cat /proc/{}/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? "×" $1 : "")}')
    printf '%-8s %-12s %-6s %s\n' "$host" "$(address "$host")" "${link:-?}" "${pids:-(nothing)}"
  done
}

cut() {
  need_root
  ip link set "veth-$1" down
  say "$1 is cut off (its processes run on)"
}

mend() {
  need_root
  ip link set "veth-$1" up
  say "$1 is back on the network"
}

down() {
  need_root
  local pair host pids
  for pair in "${HOSTS[@]}"; do
    host=${pair%%=*}
    ip netns list 2>/dev/null | grep -q "^$(ns "$host")\b" || continue
    pids=$(ip netns pids "$(ns "$host")" 2>/dev/null || true)
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null || true
  done
  sleep 1
  for pair in "${HOSTS[@]}"; do
    host=${pair%%=*}
    ip netns list 2>/dev/null | grep -q "^$(ns "$host")\b" || continue
    pids=$(ip netns pids "$(ns "$host")" 2>/dev/null || true)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    ip link del "veth-$host" 2>/dev/null || true
    ip netns del "$(ns "$host")"
    rm -rf "/etc/netns/$(ns "$host")"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  say "the lab is down"
}

case "${1:-}" in
  net-up) net_up ;;
  status) status ;;
  cut) cut "${2:?which host}" ;;
  mend) mend "${2:?which host}" ;;
  run) shift; run_on "${1:?which host}" "${@:2}" ;;
  down) down ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
