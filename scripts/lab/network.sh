# shellcheck shell=bash
# The lab's hosts and their links, sourced by scripts/lab.sh (its globals and
# helpers): each host a network namespace with an address of its own, joined
# by the bridge; brought up, listed, cut off, mended, and removed.

ns() { echo "lab-$1"; }
# The bridge and the hosts' ends of their links live in this machine's own
# network namespace, which net-up names `lab-root`: reached from wherever
# the script runs (`lab chaos` runs it on the client host).
root_ip() {
  if [ -e /run/netns/lab-root ]; then ip -n lab-root "$@"; else ip "$@"; fi
}
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
  [ -e /run/netns/lab-root ] || ip netns attach lab-root $$
  if ! root_ip link show "$BRIDGE" >/dev/null 2>&1; then
    root_ip link add "$BRIDGE" type bridge
    root_ip addr add "$NET.1/24" dev "$BRIDGE"
    root_ip link set "$BRIDGE" up
  fi
  local pair host n
  for pair in "${HOSTS[@]}"; do
    host=${pair%%=*}; n=${pair#*=}
    if ! ip netns list | grep -qx "$(ns "$host")\( .*\)\?"; then
      ip netns add "$(ns "$host")"
      root_ip link add "veth-$host" type veth peer name eth0 netns "$(ns "$host")"
      root_ip link set "veth-$host" master "$BRIDGE" up
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
    link=$(root_ip -br link show "veth-$host" 2>/dev/null | awk '{print $2}' | tr 'A-Z' 'a-z')
    pids=$(ip netns pids "$(ns "$host")" 2>/dev/null | xargs -r -n1 -I{} cat /proc/{}/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? "×" $1 : "")}')
    printf '%-8s %-12s %-6s %s\n' "$host" "$(address "$host")" "${link:-?}" "${pids:-(nothing)}"
  done
}

cut() {
  need_root
  root_ip link set "veth-$1" down
  say "$1 is cut off (its processes run on)"
}

mend() {
  need_root
  root_ip link set "veth-$1" up
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
    root_ip link del "veth-$host" 2>/dev/null || true
    ip netns del "$(ns "$host")"
    rm -rf "/etc/netns/$(ns "$host")"
  done
  root_ip link del "$BRIDGE" 2>/dev/null || true
  # Only the name goes: the namespace is this machine's own.
  [ -e /run/netns/lab-root ] && ip netns delete lab-root
  # The folder ip netns reads hosts files from, if the lab made it.
  rmdir /etc/netns 2>/dev/null || true
  # The hosts' disks go with them (only a folder of the lab's own).
  case "$LAB_DIR" in */orders-lab) rm -rf "$LAB_DIR" ;; esac
  say "the lab is down"
}
