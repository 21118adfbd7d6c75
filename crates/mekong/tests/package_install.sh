#!/usr/bin/env bash
# Installs the Debian package for real, with dpkg and its maintainer scripts, in a throwaway
# root: this machine's root filesystem seen through an overlay whose writable layer is a
# tmpfs, in a mount and PID namespace of its own (tests/package.rs starts this script under
# `unshare --pid --mount --kill-child`), so that nothing it does reaches the machine and
# everything it started dies with it. Needs root.
#
#   package_install.sh DEB MQTT_PORT HTTP_PORT
#
# Prints `key: value` lines for the test to check. Once the service runs (as the user
# mekong, with systemd's directories and the unit's environment, as systemd would start it)
# it prints `started: PID` and waits for a line on stdin; it then stops the service with
# SIGTERM, purges the package, and prints what is left.
set -euo pipefail

deb=$1
mqtt=$2
http=$3

layer=$(mktemp -d)
mount -t tmpfs throwaway "$layer"
mkdir "$layer/upper" "$layer/work" "$layer/root"
mount -t overlay throwaway -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$layer/root"
root=$layer/root
mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
# No /run/systemd/system: the maintainer scripts see a machine where systemd is not running,
# as in a container or a chroot, so they enable the service but start nothing.
mount -t tmpfs throwaway "$root/run"
mount -t tmpfs throwaway "$root/tmp"
cp "$deb" "$root/tmp/mekong.deb"
in_root() { chroot "$root" "$@"; }

in_root dpkg --install /tmp/mekong.deb >&2
echo "user: $(in_root getent passwd mekong)"
for path in /etc/mekong /etc/mekong/devices.toml /etc/mekong/mekong.toml; do
    echo "owner: $(in_root stat -c '%U:%G %a %n' "$path")"
done
echo "enabled: $(in_root readlink /etc/systemd/system/multi-user.target.wants/mekong.service || echo no)"

# What systemd does for StateDirectory=mekong, then ExecStart as User=mekong with
# NoNewPrivileges, in an environment of systemd's variables and the test's ports only.
in_root install -d -o mekong -g mekong -m 0750 /var/lib/mekong
exec_start=$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/mekong.service")
# shellcheck disable=SC2086 # ExecStart's words
chroot --userspec=mekong:mekong "$root" setpriv --no-new-privs env -i \
    STATE_DIRECTORY=/var/lib/mekong CONFIGURATION_DIRECTORY=/etc/mekong \
    MEKONG__BROKER__LISTEN="127.0.0.1:$mqtt" MEKONG__BROKER__LISTEN_V5="" \
    MEKONG__API__LISTEN="127.0.0.1:$http" $exec_start >&2 &
service=$!
echo "started: $service"

read -r _
kill -TERM "$service"
status=0
wait "$service" || status=$?
echo "exit: $status"
echo "data: $(in_root stat -c '%U:%G %a' /var/lib/mekong/data)"

in_root dpkg --purge mekong >&2
echo "purged: $(in_root dpkg-query -W -f '${db:Status-Status}' mekong 2>/dev/null || echo gone)"
echo "config left: $(in_root ls -A /etc/mekong 2>/dev/null || echo none)"
echo "data left: $(in_root ls -A /var/lib/mekong)"
echo "overrides left: $(in_root dpkg-statoverride --list '/etc/mekong*' || echo none)"
echo "done: yes"
