#!/usr/bin/env bash
# install.sh: install with apt-get what `make test` uses and a fresh Debian 12 machine
# lacks: the oracles (QEMU system emulators, qemu-user, qemu-utils), the aarch64 cross
# compiler for the A64 differential tests, dtc (device-tree checks), iasl (ACPI table
# checks), e2fsprogs (ext4 images for the disk tests), util-linux (unshare, losetup) and
# libvirt (virsh domcapabilities probes the emulators, tests/libvirt).
# Called by `make deps`, which `make test` runs first; re-running is cheap (dpkg -s).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 qemu-system-arm qemu-user qemu-utils gcc-aarch64-linux-gnu
      device-tree-compiler acpica-tools e2fsprogs util-linux
      libvirt-daemon-system libvirt-clients)
need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
((${#need[@]})) || exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
echo "deps: installing ${need[*]}"
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
