#!/usr/bin/env bash
# slurm-down.sh -- cleanly stop the single-node CI cluster started by slurm-up.sh.
# Only processes named in pid files are signalled (no pkill/killall).
#   slurm-down.sh           cancel jobs, stop slurmd, slurmctld, slurmdbd, mariadbd, munged
#   slurm-down.sh --purge   additionally drop the accounting DB and delete $SLURM_CI_DIR
#                           (job ids restart at 1 next time)
set -uo pipefail

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && exec sudo -E bash "$0" "$@"
    echo "slurm-down.sh: must run as root" >&2; exit 1
fi
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
PURGE=0; [ "${1:-}" = --purge ] && PURGE=1

source "$(dirname "${BASH_SOURCE[0]}")/slurm-procs.sh"  # running, alive

# term <pidfile> <comm>: send SIGTERM, remember pid; reap: wait for all, SIGKILL stragglers
PIDS=()
term() {
    local pf=$1 comm=$2 pid
    if ! alive "$pf" "$comm"; then echo "$comm: not running"; return 0; fi
    pid=$(cat "$pf"); kill -TERM "$pid" 2>/dev/null && PIDS+=("$pid:$comm")
}
reap() {
    local t=${1:-30} end e pid comm
    end=$(( $(date +%s) + t ))
    for e in "${PIDS[@]}"; do
        pid=${e%%:*}; comm=${e#*:}
        while running "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
        if running "$pid"; then echo "$comm: did not exit after ${t}s, SIGKILL (pid $pid)"; kill -KILL "$pid" 2>/dev/null
        else echo "$comm: stopped (pid $pid)"; fi
    done
    PIDS=()
}

# 1. cancel all jobs so no slurmstepd outlives slurmd
if alive "$DIR/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
    if [ -n "$jobs" ]; then
        echo "cancelling jobs: $(echo $jobs)"
        scancel $jobs 2>/dev/null
        for i in $(seq 1 300); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
    fi
fi

# 2. Slurm daemons (in parallel), then MariaDB and munged
term "$DIR/slurmd.pid"    slurmd
term "$DIR/slurmctld.pid" slurmctld
term "$DIR/slurmdbd.pid"  slurmdbd
reap 30
if [ "$PURGE" = 1 ] && mysqladmin ping >/dev/null 2>&1; then
    mysql -e "DROP DATABASE IF EXISTS slurm_acct_db" && echo "dropped slurm_acct_db"
fi
term /run/mysqld/mysqld.pid mariadbd
term /run/munge/munged.pid  munged
reap 60

# leftovers? (report only)
for p in /proc/[0-9]*; do
    c=$(cat "$p/comm" 2>/dev/null) || continue
    case $c in slurmstepd|slurmd|slurmctld|slurmdbd) running "${p#/proc/}" && echo "WARNING: still running: $c pid ${p#/proc/}";; esac
done

if [ "$PURGE" = 1 ]; then
    rm -rf "$DIR" && echo "removed $DIR"
fi
exit 0
