#!/bin/sh
# Build the EL layer of the lab's nodes: an overlay upper directory over the Debian base root
# that makes a node an EL system to kubeferry (lab/el_root.py). Runs on the admin host as root
# in a private mount namespace (unshare --mount), so every mount here vanishes with it:
#   el-layer.sh BASE BUILD_DIR OS_RELEASE_DIR REPO_DIR KEY_FILE PRIVATE_PYTHON DEB...
# BUILD_DIR holds upper/ work/ root/; OS_RELEASE_DIR the release files (etc/...) to copy in;
# REPO_DIR the stand-in BaseOS repository (its comps @core is what dnf records as installed);
# KEY_FILE the OS vendor's key; DEB... Debian packages to add (rpm, dnf, firewalld, ...).
# Environment: RELEASEVER (the OS's $releasever), UNITS (units of the release files to enable).
set -eu
: "${RELEASEVER:?}" "${UNITS=}"
base=$1 build=$2 release=$3 repo=$4 key=$5 python=$6
shift 6
root=$build/root

mount -t overlay overlay -o "lowerdir=$base,upperdir=$build/upper,workdir=$build/work" "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/run"
for device in null zero random urandom; do
  mount --bind "/dev/$device" "$root/dev/$device"
done
# Downloads only while building: the node's own resolv.conf (no DNS server) comes back after.
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"

in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }

# Debian's rpm, dnf and firewalld (and the shared libraries the stand-in packages' Debian
# binaries link against); policy-rc.d keeps postinst scripts from starting services here.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_root apt-get -q update
in_root apt-get -q -y --no-install-recommends install "$@"
# A minimal EL install has no containerd: docker-ce's containerd.io brings it (and runc).
in_root apt-get -q -y purge containerd runc
in_root apt-get -q -y clean
rm -rf "$root"/var/lib/apt/lists/* "$root/usr/sbin/policy-rc.d"

# EL's package tools run on the platform Python (/usr/libexec/platform-python), never on a
# python3 on PATH: the same here, the lab's private interpreter under that name.
mkdir -p "$root/usr/libexec"
ln -sf "$python" "$root/usr/libexec/platform-python"
for program in /usr/bin/dnf /usr/sbin/firewalld /usr/bin/firewall-cmd /usr/bin/firewall-offline-cmd; do
  if [ -f "$root$program" ]; then
    sed -i '1s|^#!.*python3.*$|#!/usr/libexec/platform-python|' "$root$program"
  fi
done
# EL's rpm database path (Debian's rpm defaults to ~/.rpmdb). chrony's unit is EL's
# chronyd.service (from the release files below), not Debian's chrony.service alias.
mkdir -p "$root/etc/rpm"
echo '%_dbpath /var/lib/rpm' > "$root/etc/rpm/macros.kubeferry-lab-el"
in_root systemctl disable chrony.service >/dev/null 2>&1 || true
rm -f "$root/usr/lib/systemd/system/chrony.service" "$root/etc/default/chrony"
cp "$root/etc/chrony/chrony.conf" "$root/etc/chrony.conf"
# EL's command names: yum is dnf's (EL8; on EL7 too: yum 3 cannot be had here); libraries
# of the stand-in rpms live in /usr/lib64.
ln -sf dnf "$root/usr/bin/yum"
echo /usr/lib64 > "$root/etc/ld.so.conf.d/el-lib64.conf"
mkdir -p "$root/usr/lib64"

# The release: os-release, redhat-release, system-release, the vendor's key and repositories.
# A release that brings its own uname (el7: the booted kernel's release) diverts Debian's.
if [ -e "$release/usr/bin/uname" ]; then
  in_root dpkg-divert --quiet --local --rename --divert /usr/lib/kubeferry-lab/uname.real --add /usr/bin/uname
fi
cp -a --remove-destination "$release/." "$root/"
rm -f "$root/etc/debian_version"

# SELinux as a fresh EL install has it configured (this kernel has no SELinux: getenforce
# says Disabled, as on an EL node booted with selinux=0).
mkdir -p "$root/etc/selinux"
printf 'SELINUX=enforcing\nSELINUXTYPE=targeted\n' > "$root/etc/selinux/config"

# The rpm database of a minimal install: comps @core and its closure, recorded by dnf from
# the stand-in BaseOS (justdb: the files are Debian's, already there), the vendor key imported.
in_root rpm --initdb
cp "$key" "$root/tmp/vendor.key"
in_root rpm --import /tmp/vendor.key
mkdir -p "$root/tmp/baseos"
mount --bind -o ro "$repo" "$root/tmp/baseos"
in_root /usr/libexec/platform-python /usr/bin/dnf -q -y --setopt=reposdir=/dev/null \
  --disablerepo='*' --repofrompath=baseos,file:///tmp/baseos --enablerepo=baseos \
  --setopt=baseos.gpgcheck=1 --setopt=tsflags=justdb --setopt=install_weak_deps=False \
  --releasever="$RELEASEVER" group install core
umount "$root/tmp/baseos"
rm -rf "$root/var/cache/dnf" "$root/var/log/dnf"* "$root/var/log/hawkey.log"

# firewalld and chronyd are enabled and start at boot, as on EL.
# shellcheck disable=SC2086
in_root systemctl enable firewalld.service chronyd.service $UNITS
umount "$root/etc/resolv.conf"
