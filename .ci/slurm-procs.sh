#!/usr/bin/env bash
# Process checks shared by slurm-up.sh and slurm-down.sh (sourced).

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
