#!/usr/bin/env bash
# slurm-up.sh -- install, configure and start a REAL single-node SLURM cluster
# (munged + [mariadbd + slurmdbd] + slurmctld + slurmd) on Debian/Ubuntu WITHOUT
# systemd, e.g. inside a CI container.  Idempotent: re-running only (re)starts
# what is not running and only touches apt when a package is missing.
# .ci/run starts it before `make test` (whose SLURM tests need it); on a machine
# of your own: `make slurm-up` / `make slurm-down`.
#
# Tested on Debian 12 (bookworm): slurm-wlm 22.05.8, munge 0.5.15, MariaDB 10.11.
#
# Knobs (environment variables):
#   SLURM_CI_DIR=/tmp/slurm-ci     state, spool, logs, pid files
#   SLURM_CI_ACCOUNTING=1          1: MariaDB + slurmdbd so `sacct` works (submitit
#                                  polls sacct for job states); 0: accounting_storage/none
#   SLURM_CI_AUTH=munge            munge | none  (auth/none only exists in Slurm < 23.11)
#   SLURM_CI_CPUS=$(nproc)         CPUs advertised (may exceed the real count: oversubscribe)
#   SLURM_CI_MEM_MB=90% MemTotal   RealMemory advertised (jobs asking for more are rejected)
#   SLURM_CI_PARTITION=debug       name of the (default) partition
#   SLURM_CI_SKIP_INSTALL=0        1: never call apt-get
#   SLURM_CI_SMOKE=1               1: run `srun hostname` (and sacct) at the end
#
# Needs root (re-execs itself with sudo if available).  Config goes to
# /etc/slurm/slurm.conf (the compiled-in default of Debian/Ubuntu packages),
# so no SLURM_CONF variable has to be exported to tests or jobs.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
    echo "slurm-up.sh: must run as root" >&2; exit 1
fi
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

T0=$(date +%s%N)
DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
ACCT=${SLURM_CI_ACCOUNTING:-1}
AUTH=${SLURM_CI_AUTH:-munge}
PART=${SLURM_CI_PARTITION:-debug}
NODE=$(hostname -s)
CPUS=${SLURM_CI_CPUS:-$(nproc)}
MEM=${SLURM_CI_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
CONF_DIR=/etc/slurm
DB_PASS=slurmci

log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[slurm-up %3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
die() { echo "slurm-up.sh: ERROR: $*" >&2; for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 25 "$f" >&2; }; done; exit 1; }

# wait_for <description> <timeout-seconds> <command...>
wait_for() {
    local what=$1 t=$2; shift 2
    local end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && die "$what not ready after ${t}s"
        sleep 0.2
    done
}

# running <pid>: process exists and is not a zombie.  Orphaned daemons are reaped by
# PID 1; a container init may do that late (seen: ~2 s) or never (bash/sleep as PID 1),
# and a zombie still has /proc/<pid>/comm.
running() { local st; st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null); [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]; }

# alive <pidfile> <comm>: the pid in pidfile exists and is the expected program
alive() {
    local pf=$1 comm=$2 pid
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] && running "$pid"
}

stop_pidfile() {  # used when the config changed under a running daemon
    local pf=$1 comm=$2 pid i
    alive "$pf" "$comm" || return 0
    pid=$(cat "$pf"); kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do running "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- 1. packages
PKGS=(slurmctld slurmd slurm-client)
[ "$AUTH" = munge ] && PKGS+=(munge)
[ "$ACCT" = 1 ] && PKGS+=(slurmdbd mariadb-server)
MISSING=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    [ "${SLURM_CI_SKIP_INSTALL:-0}" = 1 ] && die "missing packages: ${MISSING[*]}"
    log "apt-get install ${MISSING[*]}"
    apt-get update -qq
    # Package postinst scripts would start munge/mariadb/slurm* through init.d or systemd.
    # We start everything ourselves, so forbid that for the duration of the install
    # (standard policy-rc.d trick; many container images already ship one).
    POLICY_ADDED=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
        POLICY_ADDED=1; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    if [ "$POLICY_ADDED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    log "packages installed"
fi

# ---------------------------------------------------------------- 2. config
mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log "$CONF_DIR"
chmod 755 "$DIR"

if [ "$AUTH" = munge ]; then AUTHTYPE=auth/munge; CREDTYPE=cred/munge
else AUTHTYPE=auth/none; CREDTYPE=cred/none; fi
if [ "$ACCT" = 1 ]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

NEW_CONF=$(cat <<EOF
# generated by slurm-up.sh -- single-node CI cluster
ClusterName=ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=${AUTHTYPE}
CredType=${CREDTYPE}
MpiDefault=none
MailProg=/bin/true
# no cgroups / no systemd needed:
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
${ACCT_LINES}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# schedule immediately instead of every ~3 s (batch_sched_delay default):
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
# submitit ignores SIGTERM: a cancelled job would otherwise hold its CPUs for 30 s
KillWait=3
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PART} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
CONF_CHANGED=0
if [ ! -f "$CONF_DIR/slurm.conf" ] || [ "$(cat "$CONF_DIR/slurm.conf")" != "$NEW_CONF" ]; then
    printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"
    chmod 644 "$CONF_DIR/slurm.conf"
    CONF_CHANGED=1
fi
if [ "$ACCT" = 1 ]; then
    cat > "$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=${AUTHTYPE}
DbdHost=${NODE}
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=${DIR}/log/slurmdbd.log
PidFile=${DIR}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"   # slurmdbd refuses a world-readable file
fi
if [ "$CONF_CHANGED" = 1 ]; then
    # a running daemon would keep the old config: restart them
    stop_pidfile "$DIR/slurmd.pid" slurmd
    stop_pidfile "$DIR/slurmctld.pid" slurmctld
    stop_pidfile "$DIR/slurmdbd.pid" slurmdbd
fi
log "config written ($CONF_DIR/slurm.conf: node=$NODE cpus=$CPUS mem=${MEM}MB auth=$AUTH accounting=$ACCT)"

# ---------------------------------------------------------------- 3. munged
if [ "$AUTH" = munge ]; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged    # daemonizes; pid -> /run/munge/munged.pid
        wait_for munged 20 sh -c 'munge -n | unmunge'
        log "munged started (pid $(cat /run/munge/munged.pid))"
    fi
fi

# ---------------------------------------------------------------- 4. MariaDB + slurmdbd
if [ "$ACCT" = 1 ]; then
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if ! mysqladmin ping >/dev/null 2>&1; then
        [ -d /var/lib/mysql/mysql ] || mysql_install_db --user=mysql --datadir=/var/lib/mysql >/dev/null
        MYSQLD=$(command -v mariadbd || command -v mysqld)
        setsid "$MYSQLD" --user=mysql --pid-file=/run/mysqld/mysqld.pid \
            --innodb-buffer-pool-size=64M --skip-name-resolve --bind-address=127.0.0.1 \
            </dev/null >>"$DIR/log/mariadb.log" 2>&1 &
        wait_for mariadb 60 mysqladmin ping
        log "mariadbd started (pid $(cat /run/mysqld/mysqld.pid))"
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    if ! alive "$DIR/slurmdbd.pid" slurmdbd; then
        rm -f "$DIR/slurmdbd.pid"                 # stale after a crash / kill -9
        slurmdbd                                  # daemonizes
        wait_for slurmdbd 60 sacctmgr -n -P list cluster
        log "slurmdbd started (pid $(cat "$DIR/slurmdbd.pid"))"
    fi
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
if ! alive "$DIR/slurmctld.pid" slurmctld; then
    rm -f "$DIR/slurmctld.pid"
    slurmctld                                     # daemonizes
    wait_for slurmctld 60 sh -c 'scontrol ping | grep -q UP'
    log "slurmctld started (pid $(cat "$DIR/slurmctld.pid"))"
else
    wait_for "slurmctld (already running)" 30 sh -c 'scontrol ping | grep -q UP'
fi
if ! alive "$DIR/slurmd.pid" slurmd; then
    rm -f "$DIR/slurmd.pid"
    slurmd -N "$NODE"                             # daemonizes
    wait_for "slurmd pid file" 20 test -s "$DIR/slurmd.pid"
    log "slurmd started (pid $(cat "$DIR/slurmd.pid"))"
fi
node_ok() { sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated|completing)[[:space:]]*$'; }
end=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    node_ok && break
    # e.g. node left DOWN/DRAIN by an earlier run: resume it
    if sinfo -h -n "$NODE" -o %T | grep -Eq '^(down|drain|drained|draining)'; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.2
done
node_ok || die "node $NODE not usable: $(sinfo -h -N -o '%N %T %E')"
log "cluster up: $(sinfo -h -o '%P %a %D %T %N' | tr '\n' ' ')"

# ---------------------------------------------------------------- 6. smoke test
if [ "${SLURM_CI_SMOKE:-1}" = 1 ]; then
    out=$(srun -N1 -n1 -t 1 hostname) || die "srun failed"
    log "srun ok ($out)"
    if [ "$ACCT" = 1 ]; then
        sacct -n -X -S now-1hour -o JobID,State >/dev/null || die "sacct failed"
        log "sacct ok"
    fi
fi
log "done"
