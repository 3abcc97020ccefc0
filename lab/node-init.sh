#!/bin/sh
# Boot one lab node. Runs on the admin host as PID 1 of the node's new pid, mount, UTS,
# IPC and cgroup namespaces, already inside the node's network namespace:
#   node-init.sh BASE NODE_DIR HOSTNAME [CLUSTER_STATE]
# NODE_DIR holds upper/ work/ root/ stage/ containerd/ and product_uuid, prepared by the
# lab. Every mount below is made in the node's private mount namespace: when the node's
# processes are gone, the kernel drops them all; nothing is mounted on the admin host.
set -eu
base=$1 dir=$2 name=$3 cluster=${4:-}
root=$dir/root

mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$root"

# Kernel module index for module-less kernels (see lab/node.py): built by the node's own kmod.
if [ -s "$dir/modules.builtin" ]; then
  release=$(uname -r)
  mkdir -p "$root/lib/modules/$release"
  cp "$dir/modules.builtin" "$root/lib/modules/$release/modules.builtin"
  chroot "$root" depmod "$release" 2>/dev/null
elif [ -d "/lib/modules/$(uname -r)" ]; then
  release=$(uname -r)
  mkdir -p "$root/lib/modules/$release"
  mount --bind -o ro "/lib/modules/$release" "$root/lib/modules/$release"
fi

mount -t proc proc "$root/proc"
# A boot id of this boot: the kernel's is the host's, the same for every node and every reboot.
cat /proc/sys/kernel/random/uuid > "$dir/boot_id"
mount --bind "$dir/boot_id" "$root/proc/sys/kernel/random/boot_id"

# sysfs read-only, as container managers give it. /sys/class becomes a tmpfs holding
# bind mounts of every real class plus a dmi/id of the node's own (product_uuid: kubeadm
# and the installer's preflight compare it across nodes).
mount -t tmpfs -o mode=0755 tmpfs "$dir/stage"
mkdir "$dir/stage/sys"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t sysfs -o ro sysfs "$dir/stage/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/sys/class"
for class in "$dir"/stage/sys/class/*; do
  entry=${class##*/}
  [ "$entry" = dmi ] && continue
  mkdir "$root/sys/class/$entry"
  mount --bind "$class" "$root/sys/class/$entry"
done
mkdir -p "$root/sys/class/dmi/id"
cp "$dir/product_uuid" "$root/sys/class/dmi/id/product_uuid"
echo "kubeferry-lab node" > "$root/sys/class/dmi/id/product_name"
mount -o remount,bind,ro "$root/sys/class"
umount "$dir/stage/sys"
umount "$dir/stage"

# The node's own cgroup2 tree (rooted at its cgroup by the cgroup namespace).
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"

# /dev, /run and /tmp, as every lab root has them.
. "$(dirname "$0")/root-dev.sh"

# containerd's state on a file system that takes overlay upper dirs (not the overlay root).
mkdir -p "$root/var/lib/containerd"
mount --bind "$dir/containerd" "$root/var/lib/containerd"

# The kubeadm/kubelet/kubectl doubles' cluster state (the API server and etcd stand-in):
# one admin-host directory shared by every node of the site (lab/doubles_recipe.py STATE_DIR).
if [ -n "$cluster" ]; then
  mkdir -p "$root/var/lib/kubeferry-lab/cluster"
  mount --bind "$cluster" "$root/var/lib/kubeferry-lab/cluster"
fi

# The real etcd that the kubelet double runs for kubeadm's etcd static pod (lab equipment:
# the admin host's Debian etcd-server, read-only; lab/doubles/static_pods.py).
if [ -x /usr/bin/etcd ]; then
  mkdir -p "$root/usr/lib/kubeferry-lab/etcd"
  touch "$root/usr/lib/kubeferry-lab/etcd/etcd"
  mount --bind /usr/bin/etcd "$root/usr/lib/kubeferry-lab/etcd/etcd"
  mount -o remount,bind,ro "$root/usr/lib/kubeferry-lab/etcd/etcd"
fi

hostname "$name"

# Make the node's root the namespace's root and drop the admin host's tree from it, then
# hand PID 1 to systemd with nothing but the container marker in its environment.
cd "$root"
pivot_root . mnt
exec /bin/sh -c 'umount -l /mnt && cd / && exec env -i container=kubeferry-lab \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd'
