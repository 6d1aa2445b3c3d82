#!/usr/bin/env bash
# third_party/rskafka is rskafka 0.6.0 as released on crates.io plus the
# small patches in third_party/rskafka-patches (the workspace uses it through
# [patch.crates-io]). This script re-derives it from the released crate
# (checked against its published checksum) and the patches:
#
#   scripts/rskafka-patched.sh check   # the committed copy is exactly that (CI, `just lint`)
#   scripts/rskafka-patched.sh write   # rewrite the copy (after adding or editing a patch)
#
# Why a patched copy: see docs/adr/0011-a-patched-rskafka.md.
set -euo pipefail

version=0.6.0
sha256=849b87417a191e37e16b8893eba8928bbd10e1989e6b57c4f8531549eaa29bdc
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/third_party/rskafka"
patches="$root/third_party/rskafka-patches"
mode=${1:-check}
log() { printf '%s\n' "rskafka-patched.sh: $*" >&2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/rskafka-$version.crate 2>/dev/null | head -n 1 || true)
if [ -z "$crate" ]; then
    crate="$tmp/rskafka-$version.crate"
    curl -sSfL "https://static.crates.io/crates/rskafka/rskafka-$version.crate" -o "$crate"
fi
echo "$sha256  $crate" | sha256sum -c --quiet - || { log "checksum mismatch for $crate"; exit 1; }
tar -xzf "$crate" -C "$tmp"
src="$tmp/rskafka-$version"
# What building does not need (CI and container files, its own toolchain
# pin, its lock file) stays out.
rm -rf "$src/.circleci" "$src/.github" "$src/.cargo_vcs_info.json" "$src/.cargo-ok" \
       "$src/.editorconfig" "$src/.gitignore" "$src/.kodiak.toml" "$src/.yamllint.yml" \
       "$src"/docker-compose-*.yml "$src/kafka_jaas.conf" "$src/rust-toolchain.toml" \
       "$src/Cargo.lock" "$src/Cargo.toml.orig"
for p in "$patches"/*.patch; do
    patch -d "$src" -p1 --quiet --forward --no-backup-if-mismatch < "$p" \
        || { log "$(basename "$p") no longer applies to rskafka $version"; exit 1; }
done

case "$mode" in
    write)
        rm -rf "$dest"
        cp -r "$src" "$dest"
        log "wrote $dest (rskafka $version + $(ls "$patches"/*.patch | wc -l) patches)"
        ;;
    check)
        if ! diff -r "$src" "$dest" >"$tmp/diff"; then
            log "third_party/rskafka differs from rskafka $version + patches:"
            head -n 40 "$tmp/diff" >&2
            log "edit a patch in third_party/rskafka-patches, then run: scripts/rskafka-patched.sh write"
            exit 1
        fi
        log "third_party/rskafka is rskafka $version + $(ls "$patches"/*.patch | wc -l) patches"
        ;;
    *) log "usage: $0 check|write"; exit 2 ;;
esac
