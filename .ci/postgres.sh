#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries when they are missing, for the store tests
# (tests/integration/store/ starts its own throwaway cluster with initdb + pg_ctl; nothing here
# creates or runs a cluster). Idempotent. Needs root to install.
set -euo pipefail

have_pg() {
  command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_pg; then
  echo "postgres.sh: PostgreSQL binaries present: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tr '\n' ' ')"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "postgres.sh: PostgreSQL is missing and this is not root — run: sudo apt-get install -y postgresql" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y postgresql
# Debian starts a cluster on install; the tests start their own on a free port.
service postgresql stop >/dev/null 2>&1 || true
have_pg || { echo "postgres.sh: installed postgresql but pg_ctl/initdb are still missing" >&2; exit 1; }
echo "postgres.sh: installed $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
