#!/usr/bin/env bash
# ensure-deps.sh CMD:PACKAGE... — makes sure each command exists, installing the
# Debian package that provides it when run as root. As a normal user it only
# reports what is missing (the tests that need those commands skip then).
# Exit status: 0 when everything is there (or was installed), 1 when something
# is missing and could not be installed.
set -euo pipefail

missing=()
for pair in "$@"; do
	cmd=${pair%%:*}
	pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# unique package names, in order
pkgs=$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++' | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
	echo "ensure-deps: missing Debian packages: $pkgs(run as root to install them: apt-get install -y $pkgs)" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-deps: missing packages $pkgs and no apt-get to install them" >&2
	exit 1
fi
echo "ensure-deps: installing $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
