#!/usr/bin/env bash
# Brings up the quickstart stack (web, worker, migrate, PostgreSQL, Redis) on tug, from a
# fresh Debian machine with the Rust toolchain, as root:
#
#   ./examples/quickstart/run.sh [up options…]     e.g. --build, or WEB_PORT=8081 ./…/run.sh
#
# 1. builds tug (cargo build --release: about 6.5 minutes the first time on 2 cores, a second
#    afterwards), unless TUG names a tug binary to use;
# 2. makes sure tug's image store has debian:bookworm, the base of every image here: pulled
#    from a registry, or, when that is not possible, made from the Debian mirror with
#    `tug image bootstrap debian:bookworm` (installs mmdebstrap if needed);
# 3. runs `tug up --wait`, which builds the images (apt-get from the Debian mirror) and starts
#    the stack, then prints the address to open and how to stop it.
#
# Environment: TUG (tug binary), TUG_ROOT (tug's state root, default /var/lib/tug),
# WEB_PORT (published port, default 8080), COMPOSE_PROJECT_NAME (default quickstart),
# QUICKSTART_BASE=auto|pull|bootstrap (how to get debian:bookworm; default auto: pull, else
# bootstrap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=debian:bookworm
if [ -t 2 ]; then
    say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    say() { printf '==> %s\n' "$*" >&2; }
fi
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "tug's engine needs root (namespaces, mounts, cgroups, bridges): run this as root, e.g. sudo $0"
[ -e /etc/debian_version ] || say "warning: not a Debian system; the steps below use apt-get and mmdebstrap"

# 1. tug itself.
if [ -n "${TUG:-}" ]; then
    [ -x "$TUG" ] || die "TUG=$TUG is not an executable"
    tug=$TUG
else
    command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs or apt-get install cargo)"
    tug="$repo/target/release/tug"
    if [ ! -x "$tug" ]; then
        say "building tug (cargo build --release): about 6.5 minutes on 2 cores the first time"
    else
        say "building tug (cargo build --release): up to date in seconds unless the sources changed"
    fi
    (cd "$repo" && cargo build --release --locked)
fi
say "tug: $("$tug" version)"

# 2. The base image.
if "$tug" image inspect "$base" >/dev/null 2>&1; then
    say "$base is in tug's image store"
else
    pulled=no
    if [ "${QUICKSTART_BASE:-auto}" != bootstrap ]; then
        say "pulling $base"
        if timeout 300 "$tug" image pull "$base"; then
            pulled=yes
        elif [ "${QUICKSTART_BASE:-auto}" = pull ]; then
            die "cannot pull $base (QUICKSTART_BASE=pull)"
        else
            say "cannot pull $base (no registry access?): making it from the Debian mirror instead"
        fi
    fi
    if [ "$pulled" = no ]; then
        if ! command -v mmdebstrap >/dev/null; then
            say "installing mmdebstrap (apt-get install mmdebstrap)"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q --no-install-recommends mmdebstrap
        fi
        say "tug image bootstrap $base (mmdebstrap: 20 s or more)"
        "$tug" image bootstrap "$base"
    fi
fi

# 3. The stack.
say "tug up --wait: builds the images (apt-get from the Debian mirror, a minute or two the first time) and starts the stack"
"$tug" -f "$here/compose.yaml" up --wait "$@"
"$tug" -f "$here/compose.yaml" ps

# Commands to show, relative to where the user stands when that is shorter.
show() {
    case "$1" in "$PWD"/*) printf '%s' "./${1#"$PWD"/}" ;; *) printf '%s' "$1" ;; esac
}
t="$(show "$tug") -f $(show "$here/compose.yaml")"
# The state root and project name this run used, so that the commands reach the same stack.
[ -z "${COMPOSE_PROJECT_NAME:-}" ] || t="COMPOSE_PROJECT_NAME=$(printf '%q' "$COMPOSE_PROJECT_NAME") $t"
[ -z "${TUG_ROOT:-}" ] || t="TUG_ROOT=$(printf '%q' "$TUG_ROOT") $t"
cat >&2 <<MSG

The quickstart is up: open http://127.0.0.1:${WEB_PORT:-8080}/
  jobs:    curl -d '{"text": "hello tug"}' http://127.0.0.1:${WEB_PORT:-8080}/api/jobs
  status:  $t ps
  logs:    $t logs -f
  a shell: $t exec db psql -U quickstart
  watch:   $t watch           (edit examples/quickstart/app/web.py, then reload the page)
  stop:    $t down            (the database stays in its volume; down -v deletes it)
MSG
