#!/usr/bin/env bash
# Build the nodelocaldns container image with whichever engine is present and
# reachable: docker (BuildKit), podman or buildah, in that order.
#
#   build/image/build.sh [--target runtime|static|testdns] [--tag NAME:TAG] [--platform P]
#
# Environment: IMAGE (default nodelocaldns:dev; nodelocaldns:dev-static for the
# static target, nodelocaldns-testdns:dev for testdns), TARGET (default
# runtime), ENGINE (force docker|podman|buildah),
# PLATFORM (e.g. linux/arm64), GIT_COMMIT (default: git describe).
# Exits 2 with "no container engine: ..." when none can build. Without a
# registry, build/image/local.sh (make image) builds runtime and static.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${TARGET:-runtime}"
image="${IMAGE:-}"
platform="${PLATFORM:-}"

while [ $# -gt 0 ]; do
	case "$1" in
	--target) target="$2"; shift 2 ;;
	--tag) image="$2"; shift 2 ;;
	--platform) platform="$2"; shift 2 ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "build.sh: unknown argument: $1" >&2; exit 64 ;;
	esac
done
case "$target" in
runtime) image="${image:-nodelocaldns:dev}" ;;
static) image="${image:-nodelocaldns:dev-static}" ;;
testdns) image="${image:-nodelocaldns-testdns:dev}" ;;
*) echo "build.sh: unknown target $target (want runtime, static or testdns)" >&2; exit 64 ;;
esac
commit="${GIT_COMMIT:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)}"

# usable ENGINE: present and able to build right now; else print why not.
usable() {
	local e="$1" out
	if ! command -v "$e" >/dev/null 2>&1; then
		echo "$e: not installed"
		return 1
	fi
	if ! out="$("$e" info 2>&1 >/dev/null)"; then
		# First line of the engine's own complaint, e.g. docker's "Cannot connect
		# to the Docker daemon at unix:///var/run/docker.sock".
		echo "$e: installed but not reachable ($(printf '%s' "$out" | grep -v '^\s*$' | tail -n 1))"
		return 1
	fi
	return 0
}

engines="${ENGINE:-docker podman buildah}"
engine=""
reasons=()
for e in $engines; do
	if why="$(usable "$e")"; then
		engine="$e"
		break
	fi
	reasons+=("$why")
done
if [ -z "$engine" ]; then
	{
		printf 'no container engine: '
		(IFS=';'; printf '%s' "${reasons[*]}" | sed 's/;/; /g')
		printf '\nInstall and start docker (with BuildKit), podman or buildah, or set ENGINE.\n'
	} >&2
	exit 2
fi

args=(-f "$here/Dockerfile" --target "$target" -t "$image" --build-arg "GIT_COMMIT=$commit")
[ -n "$platform" ] && args+=(--platform "$platform")

echo "build.sh: $engine building $image (target $target) from $root" >&2
case "$engine" in
docker) DOCKER_BUILDKIT=1 docker build "${args[@]}" "$root" ;;
podman) podman build --ignorefile "$here/Dockerfile.dockerignore" "${args[@]}" "$root" ;;
buildah) buildah build --ignorefile "$here/Dockerfile.dockerignore" "${args[@]}" "$root" ;;
*) echo "build.sh: unsupported ENGINE $engine" >&2; exit 64 ;;
esac
echo "$image"
