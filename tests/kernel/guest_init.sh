#!/bin/sh
# /init of the kernel tests' guest (run by dash as PID 1; see tests/kernel/image.py).
#
# Mounts the pseudo file systems, loads the modules listed in /etc/wgpy-modules, turns on the
# wireguard module's debug messages, then serves the control port (a virtio serial port named
# wgpy.ctl) forever. The line protocol, one request per line from the host:
#
#     RUN <id> <seconds> <base64 of a dash script>
#
# and for each request, once the script has finished (killed after <seconds>):
#
#     @@wgpy-out <id>
#     <stdout, base64, wrapped>
#     @@wgpy-err <id>
#     <stderr, base64, wrapped>
#     @@wgpy-end <id> <exit status>
#
# Anything else on the port is ignored, so the host can resend a request until it is answered.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

say() { echo "wgpy-init: $*" >/dev/console; }
# PID 1 exiting panics the kernel, and with panic=-1 and -no-reboot QEMU exits: the host
# sees a failed boot at once, with this message on the console, instead of a boot timeout.
die() {
    say "FATAL: $*"
    exit 1
}

mount -t proc proc /proc || die "mount /proc"
mount -t sysfs sysfs /sys || die "mount /sys"
mount -t devtmpfs devtmpfs /dev || die "mount /dev"
mount -t debugfs debugfs /sys/kernel/debug || die "mount debugfs"

for module in $(cat /etc/wgpy-modules); do
    modprobe "$module" || die "modprobe $module"
done
# the module's debug messages ("Packet has unallowed src IP ...", handshakes) go to dmesg
echo 'module wireguard +p' >/sys/kernel/debug/dynamic_debug/control || die "dynamic debug"
# ... all of them: they are net_ratelimit()ed (10 per 5 s) unless message_cost is 0
echo 0 >/proc/sys/net/core/message_cost || die "net.core.message_cost"
ip link set lo up || die "ip link set lo up"

control_port() {
    for port in /sys/class/virtio-ports/*; do
        if [ "$(cat "$port/name" 2>/dev/null)" = wgpy.ctl ]; then
            echo "/dev/${port##*/}"
            return 0
        fi
    done
    return 1
}

tries=0
while ! port=$(control_port); do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || die "no virtio serial port named wgpy.ctl"
    sleep 0.1
done
say "serving $port"

serve() {
    while :; do
        # read fails at end of file, which the port reports while the host is not connected
        if ! IFS= read -r line; then
            sleep 0.2
            continue
        fi
        set -- $line
        [ "$#" -eq 4 ] && [ "$1" = RUN ] || continue
        printf '%s' "$4" | base64 -d >/tmp/request.sh 2>/dev/null || continue
        timeout -s KILL "$3" /bin/sh /tmp/request.sh </dev/null >/tmp/request.out \
            2>/tmp/request.err 3>&-
        status=$?
        {
            echo "@@wgpy-out $2"
            base64 </tmp/request.out
            echo "@@wgpy-err $2"
            base64 </tmp/request.err
            echo "@@wgpy-end $2 $status"
        } >&3
    done
}

exec 3<>"$port"
serve <&3
say "control loop ended"
exec sleep 1000000
