#!/usr/bin/env bash
# Build the nodelocaldns images with no registry: the base from Debian packages
# (mmdebstrap), the binary from the host's Go, the image config from the
# Dockerfile, imported into podman. Root only (mmdebstrap and podman as root).
#
#   build/image/local.sh [runtime|static]...      (default: both)
#
# runtime is the Dockerfile's `runtime` stage: Debian bookworm with its ARG
# PACKAGES; static is its `static` stage: /coredns alone. Both get /coredns, the
# /node-cache symlink and the stage's ENV, USER, EXPOSE, ENTRYPOINT and CMD
# lines, read from build/image/Dockerfile (build/image/imagetest checks the
# built images against it).
#
# Environment: IMAGE (default nodelocaldns:dev), STATIC_IMAGE (default
# nodelocaldns:dev-static), CACHE (default ~/.cache/nodelocaldns; the base
# tarball is kept there and rebuilt when missing, about 1-4 minutes),
# GIT_COMMIT (default: git describe), GO (default go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dockerfile="$here/Dockerfile"
image="${IMAGE:-nodelocaldns:dev}"
static_image="${STATIC_IMAGE:-nodelocaldns:dev-static}"
cache="${CACHE:-${HOME:-/root}/.cache/nodelocaldns}"
go="${GO:-go}"
commit="${GIT_COMMIT:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)}"
suite=bookworm # the Dockerfile's BASE_IMAGE, debian:bookworm-slim
# The project's podman settings (runc, cgroupfs, ulimits), not the host's.
export CONTAINERS_CONF="$here/containers.conf"

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(runtime static)
for t in "${targets[@]}"; do
	case "$t" in
	runtime|static) ;;
	*) echo "local.sh: unknown target $t (want runtime or static)" >&2; exit 64 ;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "local.sh: needs root (mmdebstrap and podman import as root)" >&2
	exit 1
fi
for c in podman mmdebstrap "$go" tar sha256sum; do
	if ! command -v "$c" >/dev/null 2>&1; then
		echo "local.sh: $c not found (make deps installs podman, runc and mmdebstrap)" >&2
		exit 1
	fi
done

# stage_changes STAGE: the stage's config lines, as `podman import --change`
# takes them (the same instruction syntax).
stage_changes() {
	awk -v st="$1" '
		/^FROM / { in_stage = ($NF == st) }
		in_stage && /^(ENV|USER|EXPOSE|ENTRYPOINT|CMD|WORKDIR|STOPSIGNAL|LABEL) / {
			if ($0 ~ /\\$/) { print "local.sh: continued line in stage " st ": " $0 > "/dev/stderr"; exit 1 }
			# podman import takes one port per EXPOSE
			if ($1 == "EXPOSE") { for (i = 2; i <= NF; i++) print "EXPOSE " $i; next }
			print
		}' "$dockerfile"
}

# packages: the runtime stage's ARG PACKAGES default.
packages() {
	awk '/^FROM /{ in_stage = ($NF == "runtime") } in_stage && /^ARG PACKAGES=/' "$dockerfile" |
		sed -e 's/^ARG PACKAGES=//' -e 's/^"//' -e 's/"$//'
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The binary, as the Dockerfile's build stage makes it.
echo "local.sh: building /coredns with $("$go" env GOVERSION)" >&2
mkdir -p "$work/out"
(cd "$root" && CGO_ENABLED=0 "$go" build -trimpath \
	-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$commit" \
	-o "$work/out/coredns" ./cmd/coredns)
if ! "$work/out/coredns" -plugins | grep -qw nodelocal; then
	echo "local.sh: the build lacks the nodelocal plugin" >&2
	exit 1
fi
ln -s /coredns "$work/out/node-cache"
# /coredns and /node-cache, owned by root, as COPY --from=build /out/ / makes them.
tar -C "$work/out" --owner=0 --group=0 --numeric-owner -cf "$work/app.tar" ./coredns ./node-cache

# import TARBALL STAGE NAME: makes the image and drops the one it replaces.
import() {
	local tarball="$1" stage="$2" name="$3" old new
	local changes=()
	while IFS= read -r line; do
		changes+=(--change "$line")
	done < <(stage_changes "$stage")
	if [ ${#changes[@]} -eq 0 ]; then
		echo "local.sh: no stage $stage with ENTRYPOINT/CMD/USER in $dockerfile" >&2
		exit 1
	fi
	old="$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
	new="$(podman import --quiet "${changes[@]}" "$tarball" "$name")"
	if [ -n "$old" ] && [ "${new#sha256:}" != "$old" ]; then
		podman rmi "$old" >/dev/null 2>&1 || true
	fi
	echo "local.sh: $name $(podman image inspect --format '{{.Size}}' "$name") bytes" >&2
	echo "$name"
}

for t in "${targets[@]}"; do
	case "$t" in
	runtime)
		pkgs="$(packages)"
		if [ -z "$pkgs" ]; then
			echo "local.sh: no ARG PACKAGES in the runtime stage of $dockerfile" >&2
			exit 1
		fi
		# essential: Debian's Essential:yes set (no apt), plus the packages;
		# no documentation, manual pages or translations (as debian:*-slim).
		# mmdebstrap's merged-/usr set-up brings usrmerge and with it perl
		# (about 50 MB); usr-is-merged (as in debian:bookworm-slim) stands in
		# for it once the set-up is done.
		opts=(--variant=essential "--include=${pkgs// /,},usr-is-merged"
			--customize-hook='chroot "$1" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl perl-modules-5.36 libperl5.36 libgdbm-compat4'
			--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
			--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
			--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*')
		key="$(printf '%s\n' "$suite" "${opts[@]}" | sha256sum | cut -c1-16)"
		base="$cache/image-base-$suite-$key.tar"
		if [ ! -s "$base" ]; then
			mkdir -p "$cache"
			echo "local.sh: building the base $base with mmdebstrap (${pkgs})" >&2
			mmdebstrap --quiet --format=tar "${opts[@]}" "$suite" "${base%.tar}.tmp.tar"
			mv "${base%.tar}.tmp.tar" "$base"
			# Bases of earlier package lists or options are of no more use.
			find "$cache" -maxdepth 1 -name 'image-base-*.tar' ! -name "${base##*/}" -delete
		fi
		cp "$base" "$work/runtime.tar"
		tar -Af "$work/runtime.tar" "$work/app.tar"
		import "$work/runtime.tar" runtime "$image"
		;;
	static)
		import "$work/app.tar" static "$static_image"
		;;
	esac
done
