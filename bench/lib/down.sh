#!/usr/bin/env bash
# Undo everything up.sh and a benchmark run did: remove the peers' containers, pods,
# networks and volumes this harness made, stop dockerd by its recorded pid, delete the
# bridges and iptables chains dockerd and netavark left, restore the FORWARD policy and the
# sysctls recorded by up.sh, then check that nothing is left.
set -uo pipefail
STATE=$(cd "$(dirname "$0")/.." && pwd)/.state
DOCKER=/usr/bin/docker

dockerd_pid=$(cat "$STATE/dockerd.pid" 2>/dev/null || true)
if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
  ids=$($DOCKER ps -aq); [ -n "$ids" ] && $DOCKER rm -f $ids >/dev/null
  for net in $($DOCKER network ls -q --filter label=com.docker.compose.project); do $DOCKER network rm "$net" >/dev/null; done
  $DOCKER volume prune -f >/dev/null
  $DOCKER rmi -f busybox:latest >/dev/null 2>&1
  kill -TERM "$dockerd_pid"
  for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$dockerd_pid" 2>/dev/null; then echo "dockerd ($dockerd_pid) still alive: KILL"; kill -KILL "$dockerd_pid"; fi
  echo "stopped dockerd ($dockerd_pid)"
fi
rm -f "$STATE/dockerd.pid"

if command -v podman >/dev/null; then
  ids=$(podman ps -aq --filter label=tugbench=1; podman ps -aq --filter name='^tb' 2>/dev/null)
  [ -n "$ids" ] && podman rm -f -t 0 $ids >/dev/null 2>&1
  for pod in $(podman pod ls -q --filter name='^pod_tb' 2>/dev/null); do podman pod rm -f "$pod" >/dev/null; done
  for net in $(podman network ls -q --filter name='^tb' 2>/dev/null); do podman network rm -f "$net" >/dev/null; done
  for vol in $(podman volume ls -q --filter name='^tb' 2>/dev/null); do podman volume rm -f "$vol" >/dev/null; done
  podman rmi -f localhost/busybox:latest >/dev/null 2>&1
  # aardvark-dns (podman's DNS for named networks) outlives a run when a network was not
  # torn down cleanly; only this harness uses podman on the machine.
  f=/run/containers/networks/aardvark-dns/aardvark.pid
  [ -s $f ] && kill -TERM "$(cat $f)" 2>/dev/null && echo "stopped aardvark-dns ($(cat $f))"
fi

# --- host network state -------------------------------------------------------------
if [ -s "$STATE/host-before" ]; then
  # shellcheck disable=SC1091
  . "$STATE/host-before"
  for l in $(ip -br link | awk '{sub("@.*","",$1); print $1}' | grep -E '^(docker0|podman[0-9]+|cni-podman[0-9]+|br-[0-9a-f]{12})$'); do
    case " $links " in *" $l "*) ;; *) ip link del "$l" 2>/dev/null && echo "deleted link $l";; esac
  done
  for ipt in iptables ip6tables; do
    for t in filter nat; do
      $ipt -t $t -S 2>/dev/null | grep -E '^-A ' | grep -E -- '-j (DOCKER|NETAVARK|CNI)|docker0|podman0|br-[0-9a-f]{12}' \
        | sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -t $t $rule"; done
      chains=$($ipt -t $t -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(DOCKER|NETAVARK|CNI)/ {print $2}')
      for c in $chains; do $ipt -t $t -F "$c"; done
      for c in $chains; do $ipt -t $t -X "$c"; done
    done
  done
  [ -n "${forward_policy:-}" ] && iptables -P FORWARD "$forward_policy"
  # iptables-nft creates the nft tables 'ip filter', 'ip nat' (and ip6) on first use; drop
  # the ones that were not there before and are now empty (no rules in any chain).
  for fam_tab in "ip:filter" "ip:nat" "ip6:filter" "ip6:nat"; do
    case " $nft_tables " in *" $fam_tab "*) continue;; esac
    fam=${fam_tab%%:*} tab=${fam_tab#*:}
    nft list table "$fam" "$tab" >/dev/null 2>&1 || continue
    if [ -z "$(nft list table "$fam" "$tab" | grep -vE '^\s*(table|chain|type|policy|}|$)')" ]; then
      nft delete table "$fam" "$tab" && echo "deleted empty nft table $fam $tab"
    fi
  done
  sysctl -qw net.ipv4.ip_forward="$ip_forward"
  [ "$bridge_nf_call_iptables" != none ] && sysctl -qw net.bridge.bridge-nf-call-iptables="$bridge_nf_call_iptables"
  [ "$bridge_nf_call_ip6tables" != none ] && sysctl -qw net.bridge.bridge-nf-call-ip6tables="$bridge_nf_call_ip6tables"
  rm -f "$STATE/host-before"
fi

# --- check ---------------------------------------------------------------------------
bad=0
left=$(nft list ruleset 2>/dev/null | grep -iE 'docker|netavark|podman|cni' | head -n 5)
[ -n "$left" ] && { echo "LEFT in nft ruleset:"; echo "$left"; bad=1; }
links_left=$(ip -br link | awk '{print $1}' | grep -E '^(docker0|podman[0-9]*|cni-podman[0-9]*|br-[0-9a-f]{12})(@|$)')
[ -n "$links_left" ] && { echo "LEFT links: $links_left"; bad=1; }
procs=$(ps -eo pid=,comm= | awk '$2 ~ /^(dockerd|containerd|containerd-shim|docker-registry|registry|conmon|aardvark-dns)/')
[ -n "$procs" ] && { echo "LEFT processes:"; echo "$procs"; bad=1; }
echo "host now: ip_forward=$(sysctl -n net.ipv4.ip_forward) bridge-nf-call-iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null) FORWARD=$(iptables -S FORWARD 2>/dev/null | awk '$1=="-P"{print $3}')"
[ $bad = 0 ] && echo "clean: no engine processes, bridges, chains or nft leftovers"
exit $bad
