#!/bin/sh
# Boot a ConPaaS node: boot.sh /path/node.json
# The same script runs on a VM (cloud-init user data) and for the local cloud driver
# (CONPAAS_LOCAL=1: nothing to install, this host already has it all).
set -eu

if [ $# -ne 1 ] || [ ! -r "$1" ]; then
    echo "usage: $0 /path/node.json" >&2
    exit 2
fi
CONFIG=$1
IMAGES=$(cd "$(dirname "$0")" && pwd)

packages_of() {
    # one package per line; blank lines and # comments ignored
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$IMAGES/recipes/$1.txt" | grep -v '^$' || true
}

if [ "${CONPAAS_LOCAL:-0}" != 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # The agent itself needs python3 to read the roles below.
    command -v python3 >/dev/null 2>&1 || apt-get install -y -q python3
    ROLES=$(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["roles"]))' "$CONFIG")
    RUNTIME=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("runtime", "python"))' "$CONFIG")
    PACKAGES=$(packages_of python)   # the agent runs on python3; backend = python runtime
    for role in $ROLES; do
        case $role in
            proxy) PACKAGES="$PACKAGES $(packages_of proxy)" ;;
            backend)
                case $RUNTIME in
                    php | static | java | postgresql | redis | mysql) PACKAGES="$PACKAGES $(packages_of "$RUNTIME")" ;;
                esac ;;
        esac
    done
    # shellcheck disable=SC2086 # word splitting wanted: a list of package names
    apt-get install -y -q --no-install-recommends $PACKAGES
    # The agent runs its own HAProxy, nginx, php-fpm, Tomcat, PostgreSQL, Redis and MariaDB: the
    # distribution's services must not hold a port.
    sh "$IMAGES/stop-services.sh" haproxy nginx 'php*-fpm' tomcat10 'postgresql*' redis-server redis-sentinel etcd patroni mariadb
fi

export PYTHONPATH="$IMAGES${PYTHONPATH:+:$PYTHONPATH}"
exec "${CONPAAS_PYTHON:-python3}" -m conpaas_agent "$CONFIG"
