#!/bin/sh
# Turn a fresh debootstrap root into the lab's node base. Runs on the admin host as root:
#   base-setup.sh ROOT SUDO_USER [UNIT_TO_MASK...]
# Everything node-specific (host keys, machine-id, hostname, authorized keys) is left out
# here and written into each node's own overlay layer when the node is made.
set -eu
root=$1 sudo_user=$2
shift 2

# Node identity comes per node: no shared host keys or machine-id in the base.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo localhost > "$root/etc/hostname"

# Air-gapped: no resolver (debootstrap copied the build host's resolv.conf).
echo "# kubeferry lab: air-gapped site, no DNS server" > "$root/etc/resolv.conf"

# sshd: only the per-node ed25519 host key; root by key only.
cat > "$root/etc/ssh/sshd_config.d/kubeferry-lab.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
UseDNS no
CONF

for unit in "$@"; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# A non-root login with passwordless sudo (its key is added per node).
if ! chroot "$root" getent passwd "$sudo_user" >/dev/null; then
  chroot "$root" useradd --create-home --shell /bin/bash --groups sudo "$sudo_user"
fi
echo "$sudo_user ALL=(ALL:ALL) NOPASSWD: ALL" > "$root/etc/sudoers.d/$sudo_user"
chmod 0440 "$root/etc/sudoers.d/$sudo_user"

# The directory pivot_root parks the admin host's root on while a node boots.
mkdir -p "$root/mnt"

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
