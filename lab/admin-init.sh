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

# /dev, /run and /tmp, as every lab root has them.
. "$(dirname "$0")/root-dev.sh"

hostname admin
: > "$dir/ready"
# PID 1 of the admin host: dash's wait collects any child, so orphans do not linger.
exec /bin/sh -c 'while :; do sleep 3600 & wait; done'
