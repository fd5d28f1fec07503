#!/usr/bin/env bash
# Start the daemons the peers need (dockerd with its managed containerd), after recording the
# host network settings that down.sh restores. Podman, crun, runc, skopeo need no daemon; the
# registry is started by bench.py itself on a free loopback port.
set -euo pipefail
STATE=$(cd "$(dirname "$0")/.." && pwd)/.state
mkdir -p "$STATE"
DOCKER=/usr/bin/docker

# What dockerd and podman change on the host, as it is now (down.sh puts it back).
if [ ! -s "$STATE/host-before" ]; then
  {
    echo "ip_forward=$(sysctl -n net.ipv4.ip_forward)"
    echo "bridge_nf_call_iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null || echo none)"
    echo "bridge_nf_call_ip6tables=$(sysctl -n net.bridge.bridge-nf-call-ip6tables 2>/dev/null || echo none)"
    echo "forward_policy=$(iptables -S FORWARD 2>/dev/null | awk '$1=="-P"{print $3}')"
    echo "nft_tables=\"$(nft list tables 2>/dev/null | awk '{print $2":"$3}' | tr '\n' ' ')\""
    echo "links=\"$(ip -br link | awk '{print $1}' | tr '\n' ' ')\""
  } > "$STATE/host-before.tmp"
  mv "$STATE/host-before.tmp" "$STATE/host-before"
fi
cat "$STATE/host-before"

# dockerd turns the FORWARD policy to DROP only when it has to switch ip_forward on itself;
# with bridge-nf-call-iptables=1 that DROP would also cut traffic on every other bridge of
# the host (other tug tests). Switching forwarding on first keeps the policy ACCEPT.
sysctl -qw net.ipv4.ip_forward=1

if [ -s "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
  echo "dockerd already running (pid $(cat "$STATE/dockerd.pid"))"
else
  # No systemd here: cgroupfs driver; overlay2 on the ext4 root.
  /usr/sbin/dockerd --exec-opt native.cgroupdriver=cgroupfs --storage-driver overlay2 \
      --pidfile /run/tug-bench-dockerd.pid >"$STATE/dockerd.log" 2>&1 &
  echo $! > "$STATE/dockerd.pid"
  for _ in $(seq 1 60); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER version --format 'dockerd up: server {{.Server.Version}}' \
    || { echo "dockerd failed; tail of its log:"; tail -n 30 "$STATE/dockerd.log"; exit 1; }
fi
echo "FORWARD policy now: $(iptables -S FORWARD | awk '$1=="-P"{print $3}')"
