#!/bin/sh
# stop-services.sh NAME...: stop and disable the distribution's own services of the packages the
# agent runs by itself (haproxy, nginx, php*-fpm, tomcat10;
# apache2, should a package of the tests pull it), so they hold no port and never start
# at boot. A NAME may be a glob ('php*-fpm'). Used by boot.sh on a VM and by ./run on this host.
# With systemd, `systemctl disable --now` stops exactly the unit's processes; without it (a
# container, where policy-rc.d kept them from starting) the services are disabled only: nothing
# is stopped by process name.
set -eu
for pattern in "$@"; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        for unit in $(systemctl list-unit-files --no-legend "$pattern.service" 2>/dev/null | awk '{print $1}'); do
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
    elif command -v update-rc.d >/dev/null 2>&1; then
        for script in /etc/init.d/$pattern; do
            [ -x "$script" ] && update-rc.d "$(basename "$script")" disable >/dev/null 2>&1 || true
        done
    fi
done
