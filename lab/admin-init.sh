#!/bin/sh
# Hold one lab admin host's root: runs on the internet side (this machine) as PID 1 of the
# admin host's new pid, mount and UTS namespaces, already inside its network namespace:
#   admin-init.sh BASE ADMIN_DIR
# ADMIN_DIR holds upper/ work/ root/, prepared by the lab. The mounts live in the admin
# host's private mount namespace: they vanish with it, none is visible on this machine.
# Commands run in it with nsenter and chroot ADMIN_DIR/root (lab/admin_host.py).
set -eu
base=$1 dir=$2
root=$dir/root

mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$root"
mount -t proc proc "$root/proc"

# /dev: a tmpfs with the basic character devices bound from the host, and its own ptys.
mount -t tmpfs -o mode=0755,size=16m tmpfs "$root/dev"
for device in null zero full random urandom tty; do
  : > "$root/dev/$device"
  mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"

hostname admin
: > "$dir/ready"
# PID 1 of the admin host: dash's wait collects any child, so orphans do not linger.
exec /bin/sh -c 'while :; do sleep 3600 & wait; done'
