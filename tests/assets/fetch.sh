#!/usr/bin/env bash
# fetch.sh ARCH ASSETS: download Debian's current 6.1 kernel and static busybox for ARCH
# (amd64 or arm64) with apt-get download, extract them under ASSETS/ARCH, and build the
# test initramfs ASSETS/ARCH/initrd.gz. Called by `make assets`; re-running is cheap.
set -euo pipefail
arch=$1; assets=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=$assets/$arch
mkdir -p "$dir" "$assets/debs"
export DEBIAN_FRONTEND=noninteractive

sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if [ "$arch" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  $sudo dpkg --add-architecture "$arch"
  $sudo apt-get update -qq
fi
kpkg() { apt-cache depends "linux-image-$arch:$arch" 2>/dev/null | awk '/Depends: linux-image-6/{print $2; exit}' | sed 's/:.*//'; }
kernel=$(kpkg || true)
if [ -z "$kernel" ]; then $sudo apt-get update -qq; kernel=$(kpkg); fi
[ -n "$kernel" ] || { echo "fetch.sh: cannot find Debian's linux-image package for $arch" >&2; exit 1; }

if [ ! -f "$dir/.$kernel" ]; then
  (cd "$assets/debs" && apt-get download -q "$kernel:$arch" "busybox-static:$arch" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  rm -rf "$dir/root"; mkdir -p "$dir/root"
  for d in "$assets/debs/${kernel}_"*"_$arch.deb" "$assets/debs/busybox-static_"*"_$arch.deb"; do
    [ -f "$d" ] || { echo "fetch.sh: download of $d failed" >&2; exit 1; }
    dpkg-deb -x "$d" "$dir/root"
  done
  kver=${kernel#linux-image-}
  cp "$dir/root/boot/vmlinuz-$kver" "$dir/vmlinuz"
  cp "$dir/root/bin/busybox" "$dir/busybox"
  echo "$kver" > "$dir/kver"
  # Keep only what tests use of the module tree (the full tree is several hundred MiB).
  find "$dir/root" -mindepth 1 -maxdepth 1 ! -name lib -exec rm -rf {} +
  rm -f "$dir"/.linux-image-*
  touch "$dir/.$kernel"
fi
kver=$(cat "$dir/kver")
mods=virtio_pci,virtio_mmio,virtio_blk,virtio_net,virtio_console,virtio_rng,ext4,crc32c_generic
(cd "$top" && go run ./tests/assets/mkinitrd -o "$dir/initrd.gz" -busybox "$dir/busybox" \
  -moddir "$dir/root/lib/modules/$kver" -kver "$kver" -mods "$mods")
echo "assets: $arch kernel $kver, initrd $(du -h "$dir/initrd.gz" | cut -f1)"
