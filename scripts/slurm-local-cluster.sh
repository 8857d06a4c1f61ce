#!/usr/bin/env bash
# slurm-local-cluster.sh -- a one-node SLURM cluster on this host for metalab's tests
# (Debian 12, SLURM 22.05, run as root, no systemd needed).
#
# Usage:
#   scripts/slurm-local-cluster.sh            set up / check the cluster (idempotent)
#   scripts/slurm-local-cluster.sh --restart  same, but always restart the daemons (clears state)
#   scripts/slurm-local-cluster.sh status     exit 0 if the node is idle/mix/alloc, else 3
#   scripts/slurm-local-cluster.sh stop       stop slurmctld and slurmd (munge keeps running)
#
# What setup does:
#   1. apt-get installs slurmctld slurmd slurm-client munge when any of them is missing;
#   2. starts munged as the `munge` user unless `munge -n | unmunge` already works;
#   3. writes /etc/slurm/slurm.conf for this host: one node, named `hostname -s`, reached on
#      127.0.0.1, declaring CPUs=max(nproc, $METALAB_SLURM_CPUS or 8) cores (accepted thanks
#      to SlurmdParameters=config_overrides, so that e.g. 4 array tasks run at once on a
#      2-core machine), RealMemory = total memory minus a 4 GiB margin, DefMemPerCPU so that jobs
#      without --mem do not take the whole node, $METALAB_SLURM_GPUS (default 2, >= 1) fake
#      GPUs (GRES gpu backed by placeholder files, /etc/slurm/gres.conf) so that jobs asking
#      for GPUs are scheduled (they get no device), MaxArraySize=100001, MaxJobCount=200000,
#      fast scheduling, partition `debug` (default), no accounting (sacct does not work:
#      use squeue / scontrol show job); jobs run as the submitting user (root here) on the
#      same filesystem, so a job may use the submitter's Python/venv directly;
#   4. (re)starts slurmctld and slurmd when they are not both running with this exact config
#      (killing stale daemons by their pid), waits until sinfo shows the node idle (or
#      mix/alloc), resuming it if it came up down/drained; on timeout prints the logs.
#      Saved jobs are kept when a live controller is restarted for a new config, and cleared
#      when no controller was running (their processes are gone) or with --restart;
#   5. runs a smoke job: `srun -N1 true`.
# Logs: /var/log/slurm/slurmctld.log and /var/log/slurm/slurmd.log.
set -euo pipefail

CPUS_WANTED=${METALAB_SLURM_CPUS:-8}
GPUS=${METALAB_SLURM_GPUS:-2}
FAKE_GPU_DIR=/var/lib/slurm/metalab-fake-gpu
MEM_MARGIN_MB=${METALAB_SLURM_MEM_MARGIN_MB:-4096}
READY_TIMEOUT=${METALAB_SLURM_READY_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
HASH_FILE=/run/metalab-slurm.confhash

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root (apt-get, munge, slurm daemons)"

NODE=$(hostname -s)

dump_logs() {
    local f
    for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log"; do
        log "---- last lines of $f ----"
        tail -n 40 "$f" >&2 2>/dev/null || log "(no $f)"
    done
    log "---- sinfo ----"
    sinfo -N -l >&2 2>&1 || true
}

ensure_installed() {
    local missing=() p
    for p in slurmctld slurmd slurm-client munge; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}" >&2; then
        apt-get update -q >&2
        apt-get install -y -q "${missing[@]}" >&2
    fi
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    if munge_ok; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            (
                umask 077
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
            )
            chown munge:munge /etc/munge/munge.key
        fi
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    # A munged that died uncleanly leaves its socket/pid behind: munged then refuses to start.
    local pid
    pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
    if [ -n "$pid" ] && ! is_prog "$pid" munged; then
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    local _
    for _ in $(seq 1 50); do
        munge_ok && return
        sleep 0.2
    done
    die "munge does not work (munge -n | unmunge fails)"
}

write_conf() {
    local ncpu cpus total_mb real_mem def_mem
    ncpu=$(nproc)
    cpus=$((ncpu > CPUS_WANTED ? ncpu : CPUS_WANTED))
    # From the total (not the momentarily available) memory, so that the config -- and so
    # whether a re-run restarts the daemons -- does not depend on what else runs right now.
    total_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    real_mem=$((total_mb - MEM_MARGIN_MB))
    [ "$real_mem" -ge 512 ] || real_mem=512
    [ "$real_mem" -lt 2048 ] || real_mem=$((real_mem / 1024 * 1024))
    def_mem=$((real_mem / cpus))

    install -d -m 0755 /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd
    # Fake GPUs: lets jobs asking --gpus/--gres=gpu be scheduled here (no real device).
    # slurmd counts GPUs by their File= entries (without them it reports 0 and the node is
    # drained as INVALID_REG), so point it at plain placeholder files.
    local gres_tmp g
    install -d -m 0755 "$FAKE_GPU_DIR"
    for g in $(seq 0 $((GPUS - 1))); do
        [ -e "$FAKE_GPU_DIR/gpu$g" ] || : >"$FAKE_GPU_DIR/gpu$g"
    done
    gres_tmp=$(mktemp /etc/slurm/gres.conf.XXXXXX)
    printf '%s\n' '# Written by metalab scripts/slurm-local-cluster.sh: fake GPUs (plain files).' \
        "NodeName=$NODE Name=gpu File=$FAKE_GPU_DIR/gpu[0-$((GPUS - 1))]" >"$gres_tmp"
    chmod 0644 "$gres_tmp"
    if cmp -s "$gres_tmp" /etc/slurm/gres.conf; then
        rm -f "$gres_tmp"
    else
        mv -f "$gres_tmp" /etc/slurm/gres.conf
    fi
    local tmp
    tmp=$(mktemp /etc/slurm/slurm.conf.XXXXXX)
    cat >"$tmp" <<EOF
# Written by metalab scripts/slurm-local-cluster.sh -- a single-node test cluster.
ClusterName=metalab
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=10000,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$real_mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    chmod 0644 "$tmp"
    if cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$CONF"
    fi
    log "config $CONF (node $NODE: CPUs=$cpus on $ncpu real cores, RealMemory=${real_mem}MB)"
}

# is_prog PID NAME: PID is alive and runs NAME (a pid file may outlive its daemon, and the
# pid may since belong to something else).
is_prog() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = "$2" ]; }

alive() { # alive NAME PIDFILE
    is_prog "$(cat "$2" 2>/dev/null || true)" "$1"
}

stop_daemon() { # stop_daemon NAME PIDFILE
    local name=$1 pidfile=$2 pids pid _
    pids=$(cat "$pidfile" 2>/dev/null || true)
    # Daemons of an earlier run whose pid file is gone: only this exact program name.
    pids="$pids $(pgrep -x "$name" || true)"
    for pid in $pids; do
        is_prog "$pid" "$name" || continue
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignores SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$pidfile"
}

node_state() { timeout 10 sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1 || true; }

node_usable() {
    case "$(node_state)" in
    idle | mix | alloc | comp | idle~ | mix- | alloc- | "comp*") return 0 ;;
    *) return 1 ;;
    esac
}

start_daemons() {
    local clear=$1
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    if [ "$clear" -eq 1 ]; then
        # No controller was running (fresh machine, reboot, end of a session, --restart): its
        # saved jobs belong to processes that are gone, so forget them rather than rerun them.
        log "starting slurmctld (saved state cleared) and slurmd"
        /usr/sbin/slurmctld -c -i
    else
        # A live controller restarted for a new config: keep its jobs (running steps survive).
        log "starting slurmctld (saved state kept) and slurmd"
        /usr/sbin/slurmctld -i
    fi
    /usr/sbin/slurmd
}

wait_node() {
    local deadline=$((SECONDS + READY_TIMEOUT)) state resumed=0
    while :; do
        state=$(node_state)
        case "$state" in
        idle | mix | alloc) break ;;
        down* | drain* | drng* | fail* | unk*)
            # ReturnToService=2 usually handles this; resume explicitly once slurmd registered.
            if [ "$resumed" -eq 0 ] && [ $((SECONDS % 3)) -eq 0 ] && alive slurmd "$SLURMD_PID"; then
                if scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1; then
                    resumed=1
                fi
            fi
            ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "node $NODE not idle after ${READY_TIMEOUT}s (state '${state:-no answer}')"
            dump_logs
            die "SLURM node did not come up"
        fi
        sleep 0.5
    done
    log "node $NODE is $state"
}

smoke_test() {
    log "smoke test: srun -N1 true"
    if ! timeout 60 srun -N1 -n1 -t 1 -J metalab-smoke true; then
        dump_logs
        die "smoke job 'srun -N1 true' failed"
    fi
}

do_setup() {
    local force=$1
    ensure_installed
    ensure_munge
    write_conf
    local hash
    hash=$(cat "$CONF" /etc/slurm/gres.conf | sha256sum | cut -d' ' -f1)
    if [ "$force" -eq 0 ] && alive slurmctld "$CTLD_PID" && alive slurmd "$SLURMD_PID" &&
        [ "$(cat "$HASH_FILE" 2>/dev/null || true)" = "$hash" ] && node_usable; then
        log "slurmctld and slurmd already run with this configuration: keeping them"
    else
        local clear=1
        if [ "$force" -eq 0 ] && alive slurmctld "$CTLD_PID"; then clear=0; fi
        start_daemons "$clear"
        printf '%s\n' "$hash" >"$HASH_FILE"
    fi
    wait_node
    smoke_test
    log "cluster ready: partition debug, node $NODE, $(sinfo -h -N -n "$NODE" -o %c) CPUs"
}

case "${1:-setup}" in
setup) do_setup 0 ;;
--restart | restart) do_setup 1 ;;
status)
    if node_usable; then
        log "node $NODE is $(node_state)"
    else
        log "node $NODE is not usable (state '$(node_state)')"
        exit 3
    fi
    ;;
stop)
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    rm -f "$HASH_FILE"
    ;;
-h | --help | help) sed -n '2,28p' "$0" ;;
*) die "unknown command '$1' (setup|--restart|status|stop)" ;;
esac
