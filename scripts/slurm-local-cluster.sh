#!/usr/bin/env bash
# slurm-local-cluster.sh -- a one-node SLURM cluster on this host for metalab's tests
# (Debian 12, SLURM 22.05, run as root, no systemd needed).
#
# Usage:
#   scripts/slurm-local-cluster.sh [--profile P] [setup]  set up / check the cluster (idempotent)
#   scripts/slurm-local-cluster.sh [--profile P] --restart  same, always restart (clears jobs)
#   scripts/slurm-local-cluster.sh [--profile P] status   exit 0 if the node is usable, else 3
#   scripts/slurm-local-cluster.sh [--profile P] stop     stop the profile's daemons
#
# Profiles (--profile, or $METALAB_SLURM_PROFILE; default `permissive`):
#   permissive  the fast development cluster described below (config /etc/slurm/slurm.conf,
#               the default location: plain `sbatch` finds it);
#   site        a cluster configured like a production site (config /etc/slurm-site/, own
#               ports, state, logs and pid files, so it runs next to the permissive one).
#               Clients reach it through SLURM_CONF: setup prints `SLURM_CONF=...` as its
#               last stdout line (`export "$(scripts/slurm-local-cluster.sh --profile site |
#               grep ^SLURM_CONF=)"`). What it enforces:
#                 - accounting: slurmdbd + MariaDB, so sacct/sacctmgr work; associations,
#                   limits and QOS are enforced (AccountingStorageEnforce), root and
#                   $SUDO_USER get an association in account `metalab`;
#                 - QOS `normal` with MaxSubmitJobsPerUser=$METALAB_SLURM_SITE_MAX_SUBMIT
#                   (default 200; every array task counts, a bigger array is refused whole),
#                   the users' default; QOS `bigsubmit` (MaxSubmitJobsPerUser=2000),
#                   `smallsubmit` (20) and `tinysubmit` (8) also granted, picked with --qos
#                   or SBATCH_QOS (the small ones make wave tests quick);
#                 - MaxArraySize=1001 (--array=0-1000 at most), MaxJobCount=5000;
#                 - memory enforced by cgroups (v1): a task above its --mem ends
#                   OUT_OF_MEMORY; DefMemPerCPU=1000 (MB) for jobs without --mem; the node
#                   declares max(memory - 4 GiB, 4 GiB per CPU), so 8 tasks of --mem=4G fit;
#                 - partitions `low` (default, PriorityTier=1, PreemptMode=REQUEUE,
#                   MaxTime=12:00:00, DefaultTime=1:00:00) and `high` (PriorityTier=10,
#                   MaxTime=4:00:00): a `high` job preempts `low` jobs, which are requeued;
#                   EnforcePartLimits=ALL refuses at sbatch a --time above MaxTime;
#                 - walltime and signals as sites do: OverTimeLimit=0, KillWait=15,
#                   SlurmctldParameters=preempt_send_user_signal (a job's --signal is sent
#                   at preemption too).
#               Logs: /var/log/slurm/site-{slurmctld,slurmd,slurmdbd}.log, MariaDB's in
#               /var/log/mysql/.
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

PROFILE=${METALAB_SLURM_PROFILE:-permissive}
if [ "${1:-}" = "--profile" ]; then
    PROFILE=${2:?--profile needs permissive or site}
    shift 2
fi
case "$PROFILE" in
permissive | site) ;;
*)
    printf '[slurm-local] ERROR: unknown profile %s (permissive|site)\n' "$PROFILE" >&2
    exit 1
    ;;
esac

CPUS_WANTED=${METALAB_SLURM_CPUS:-8}
GPUS=${METALAB_SLURM_GPUS:-2}
FAKE_GPU_DIR=/var/lib/slurm/metalab-fake-gpu
MEM_MARGIN_MB=${METALAB_SLURM_MEM_MARGIN_MB:-4096}
READY_TIMEOUT=${METALAB_SLURM_READY_TIMEOUT:-60}
LOGDIR=/var/log/slurm
if [ "$PROFILE" = site ]; then
    CONF_DIR=/etc/slurm-site
    CTLD_PID=/run/slurmctld-site.pid
    SLURMD_PID=/run/slurmd-site.pid
    DBD_PID=/run/slurmdbd-site.pid
    HASH_FILE=/run/metalab-slurm-site.confhash
    CTLD_LOG=$LOGDIR/site-slurmctld.log
    SLURMD_LOG=$LOGDIR/site-slurmd.log
    DBD_LOG=$LOGDIR/site-slurmdbd.log
    STATE_DIR=/var/spool/slurmctld-site
    SPOOL_DIR=/var/spool/slurmd-site
    # Other ports than the permissive profile's (6817/6818) so both clusters can run.
    CTLD_PORT=6827
    SLURMD_PORT=6828
    DBD_PORT=6829
    SITE_MAX_SUBMIT=${METALAB_SLURM_SITE_MAX_SUBMIT:-200}
    SITE_EXTRA_QOS=(bigsubmit:2000 smallsubmit:20 tinysubmit:8) # name:MaxSubmitJobsPerUser
    SITE_CLUSTER=metalabsite
    SITE_ACCOUNT=metalab
    DB_PASS_FILE=$CONF_DIR/.storage-pass
    MYSQL_CNF=/etc/mysql/mariadb.conf.d/90-metalab-slurm.cnf
else
    CONF_DIR=/etc/slurm
    CTLD_PID=/run/slurmctld.pid
    SLURMD_PID=/run/slurmd.pid
    HASH_FILE=/run/metalab-slurm.confhash
    CTLD_LOG=$LOGDIR/slurmctld.log
    SLURMD_LOG=$LOGDIR/slurmd.log
fi
CONF=$CONF_DIR/slurm.conf
# Every client and daemon below reads this profile's config (cgroup.conf, gres.conf and
# slurmdbd.conf are looked up next to it).
export SLURM_CONF=$CONF

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root (apt-get, munge, slurm daemons)"

NODE=$(hostname -s)

dump_logs() {
    local f
    for f in "$CTLD_LOG" "$SLURMD_LOG" ${DBD_LOG:+"$DBD_LOG"}; do
        log "---- last lines of $f ----"
        tail -n 40 "$f" >&2 2>/dev/null || log "(no $f)"
    done
    log "---- sinfo ----"
    sinfo -N -l >&2 2>&1 || true
}

ensure_installed() {
    local missing=() p
    local want=(slurmctld slurmd slurm-client munge)
    [ "$PROFILE" = site ] && want+=(slurmdbd mariadb-server)
    for p in "${want[@]}"; do
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

# install_if_changed TMP DEST: move TMP over DEST unless identical (keeps DEST's mtime, and
# so the config hash, stable across re-runs).
install_if_changed() {
    chmod "${3:-0644}" "$1"
    if cmp -s "$1" "$2"; then
        rm -f "$1"
    else
        mv -f "$1" "$2"
    fi
}

# Fake GPUs: lets jobs asking --gpus/--gres=gpu be scheduled here (no real device). slurmd
# counts GPUs by their File= entries (without them it reports 0 and the node is drained as
# INVALID_REG), so point it at plain placeholder files.
write_gres() {
    local gres_tmp g
    install -d -m 0755 "$FAKE_GPU_DIR"
    for g in $(seq 0 $((GPUS - 1))); do
        [ -e "$FAKE_GPU_DIR/gpu$g" ] || : >"$FAKE_GPU_DIR/gpu$g"
    done
    gres_tmp=$(mktemp "$CONF_DIR/gres.conf.XXXXXX")
    printf '%s\n' '# Written by metalab scripts/slurm-local-cluster.sh: fake GPUs (plain files).' \
        "NodeName=$NODE Name=gpu File=$FAKE_GPU_DIR/gpu[0-$((GPUS - 1))]" >"$gres_tmp"
    install_if_changed "$gres_tmp" "$CONF_DIR/gres.conf"
}

# node_resources: sets cpus, real_mem and def_mem for the node line.
node_resources() {
    ncpu=$(nproc)
    cpus=$((ncpu > CPUS_WANTED ? ncpu : CPUS_WANTED))
    # From the total (not the momentarily available) memory, so that the config -- and so
    # whether a re-run restarts the daemons -- does not depend on what else runs right now.
    total_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    real_mem=$((total_mb - MEM_MARGIN_MB))
    [ "$real_mem" -ge 512 ] || real_mem=512
    [ "$real_mem" -lt 2048 ] || real_mem=$((real_mem / 1024 * 1024))
    def_mem=$((real_mem / cpus))
}

write_conf() {
    local ncpu cpus total_mb real_mem def_mem
    node_resources

    install -d -m 0755 /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd
    write_gres
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

# ---- site profile ---------------------------------------------------------------------
write_site_conf() {
    local ncpu cpus total_mb real_mem def_mem tmp
    node_resources
    # Like the CPUs, memory is declared beyond the machine (4 GiB a CPU) so that every CPU
    # can run a task with metalab's default --mem=4G; cgroups still hold each task to its
    # own --mem, which is what the tests of OUT_OF_MEMORY rely on.
    [ "$real_mem" -ge $((cpus * 4096)) ] || real_mem=$((cpus * 4096))
    install -d -m 0755 "$CONF_DIR" "$LOGDIR" "$SPOOL_DIR"
    # slurmctld and slurmdbd run as SlurmUser=slurm, as at a site: it owns their state/logs.
    install -d -m 0755 -o slurm -g slurm "$STATE_DIR"
    for f in "$CTLD_LOG" "$DBD_LOG"; do
        [ -e "$f" ] || install -m 0640 -o slurm -g slurm /dev/null "$f"
    done
    write_gres
    tmp=$(mktemp "$CONF_DIR/slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by metalab scripts/slurm-local-cluster.sh --profile site: one node configured
# like a production site (accounting + QOS limits, cgroup memory, preemption, MaxTime).
ClusterName=$SITE_CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$CONF_DIR/plugstack.conf
ProctrackType=proctrack/cgroup
# task/cgroup confines memory; no task/affinity and ConstrainCores=no because the node
# declares more CPUs than the machine has (config_overrides), which cannot be pinned.
TaskPlugin=task/cgroup
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/cgroup
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=10000,bf_interval=1
SlurmctldParameters=preempt_send_user_signal
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
EnforcePartLimits=ALL
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
MaxArraySize=1001
MaxJobCount=5000
MinJobAge=300
KillWait=15
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$real_mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=low Nodes=$NODE Default=YES PriorityTier=1 PreemptMode=REQUEUE MaxTime=12:00:00 DefaultTime=1:00:00 State=UP OverSubscribe=NO
PartitionName=high Nodes=$NODE PriorityTier=10 PreemptMode=OFF MaxTime=4:00:00 DefaultTime=1:00:00 State=UP OverSubscribe=NO
EOF
    install_if_changed "$tmp" "$CONF"

    tmp=$(mktemp "$CONF_DIR/cgroup.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by metalab scripts/slurm-local-cluster.sh --profile site.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
ConstrainDevices=no
EOF
    install_if_changed "$tmp" "$CONF_DIR/cgroup.conf"
    # An empty plugin stack: the permissive profile's /etc/slurm/plugstack.conf.d is not ours.
    tmp=$(mktemp "$CONF_DIR/plugstack.conf.XXXXXX")
    printf '# Written by metalab scripts/slurm-local-cluster.sh --profile site: no SPANK plugins.\n' >"$tmp"
    install_if_changed "$tmp" "$CONF_DIR/plugstack.conf"

    if [ ! -s "$DB_PASS_FILE" ]; then
        (
            umask 077
            head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE"
        )
    fi
    tmp=$(mktemp "$CONF_DIR/slurmdbd.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by metalab scripts/slurm-local-cluster.sh --profile site.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=slurm
PidFile=$DBD_PID
LogFile=$DBD_LOG
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(cat "$DB_PASS_FILE")
StorageLoc=slurm_acct_db
EOF
    # slurmdbd refuses a config that others can read (it holds the database password).
    chown slurm:slurm "$tmp"
    install_if_changed "$tmp" "$CONF_DIR/slurmdbd.conf" 0600

    tmp=$(mktemp "$MYSQL_CNF.XXXXXX")
    # slurmdbd warns below a 1 GiB buffer pool and times out on the default lock wait.
    printf '%s\n' '# Written by metalab scripts/slurm-local-cluster.sh --profile site.' \
        '[mysqld]' 'innodb_buffer_pool_size=1G' 'innodb_log_file_size=64M' \
        'innodb_lock_wait_timeout=900' >"$tmp"
    install_if_changed "$tmp" "$MYSQL_CNF"
    log "config $CONF (site profile; node $NODE: CPUs=$cpus, RealMemory=${real_mem}MB)"
}

mariadb_ok() { mysqladmin ping >/dev/null 2>&1; }

ensure_mariadb() {
    if ! mariadb_ok; then
        log "starting MariaDB (mysqld_safe)"
        install -d -o mysql -g mysql -m 0755 /run/mysqld
        setsid nohup /usr/bin/mysqld_safe >/dev/null 2>&1 </dev/null &
        local _
        for _ in $(seq 1 100); do
            mariadb_ok && break
            sleep 0.2
        done
        mariadb_ok || die "MariaDB does not answer (see /var/log/mysql/)"
    fi
    # Root reaches MariaDB through its unix socket; the password is slurmdbd's only.
    mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$(cat "$DB_PASS_FILE")';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$(cat "$DB_PASS_FILE")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

dbd_ok() { timeout 10 sacctmgr -nP show cluster format=cluster >/dev/null 2>&1; }

ensure_slurmdbd() {
    local restart=$1 _
    if [ "$restart" -eq 0 ] && alive slurmdbd "$DBD_PID" && dbd_ok; then
        return
    fi
    stop_daemon slurmdbd "$DBD_PID"
    log "starting slurmdbd"
    /usr/sbin/slurmdbd
    for _ in $(seq 1 100); do
        dbd_ok && return
        sleep 0.2
    done
    dump_logs
    die "slurmdbd does not answer (sacctmgr show cluster fails)"
}

# ensure_associations: the cluster, an account, the users and the QOS limit, idempotently
# (sacctmgr refuses to add what exists: ask first).
ensure_associations() {
    local users=(root) u
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then users+=("$SUDO_USER"); fi
    if ! sacctmgr -nP show cluster format=cluster | grep -qx "$SITE_CLUSTER"; then
        sacctmgr -i add cluster "$SITE_CLUSTER" >/dev/null
    fi
    if ! sacctmgr -nP show account format=account | grep -qx "$SITE_ACCOUNT"; then
        sacctmgr -i add account "$SITE_ACCOUNT" Cluster="$SITE_CLUSTER" \
            Description=metalab-tests Organization=metalab >/dev/null
    fi
    for u in "${users[@]}"; do
        if ! sacctmgr -nP show assoc where user="$u" account="$SITE_ACCOUNT" format=user | grep -qx "$u"; then
            sacctmgr -i add user "$u" Account="$SITE_ACCOUNT" DefaultAccount="$SITE_ACCOUNT" \
                Cluster="$SITE_CLUSTER" >/dev/null
        fi
    done
    if [ "$(sacctmgr -nP show qos normal format=MaxSubmitJobsPerUser)" != "$SITE_MAX_SUBMIT" ]; then
        sacctmgr -i modify qos normal set MaxSubmitJobsPerUser="$SITE_MAX_SUBMIT" >/dev/null
    fi
    # More QOS, granted next to the default `normal` (sites grant such QOS on request; users
    # pick one with --qos or SBATCH_QOS): `bigsubmit` has room for more than one
    # MaxArraySize of tasks, `smallsubmit` makes waves quick to test.
    local spec name limit
    for spec in "${SITE_EXTRA_QOS[@]}"; do
        name=${spec%%:*} limit=${spec#*:}
        if ! sacctmgr -nP show qos format=name | grep -qx "$name"; then
            sacctmgr -i add qos "$name" >/dev/null
        fi
        if [ "$(sacctmgr -nP show qos "$name" format=MaxSubmitJobsPerUser)" != "$limit" ]; then
            sacctmgr -i modify qos "$name" set MaxSubmitJobsPerUser="$limit" >/dev/null
        fi
    done
    local want_qos
    want_qos=$(printf '%s\n' normal "${SITE_EXTRA_QOS[@]%%:*}" | sort | paste -sd,)
    for u in "${users[@]}"; do
        if [ "$(sacctmgr -nP show assoc where user="$u" account="$SITE_ACCOUNT" format=qos,defaultqos)" != "$want_qos|normal" ]; then
            sacctmgr -i modify user "$u" where account="$SITE_ACCOUNT" \
                set QOS="$want_qos" DefaultQOS=normal >/dev/null
        fi
    done
    log "accounting: cluster $SITE_CLUSTER, account $SITE_ACCOUNT (users ${users[*]}), QOS normal (default) MaxSubmitJobsPerUser=$SITE_MAX_SUBMIT, also ${SITE_EXTRA_QOS[*]}"
}

# is_prog PID NAME: PID is alive and runs NAME (a pid file may outlive its daemon, and the
# pid may since belong to something else).
is_prog() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = "$2" ]; }

alive() { # alive NAME PIDFILE
    is_prog "$(cat "$2" 2>/dev/null || true)" "$1"
}

# of_profile PID: the slurmctld/slurmd PID belongs to this profile. The site profile's
# daemons are started with `-f /etc/slurm-site/slurm.conf`, the permissive ones without,
# so that stopping one profile never kills the other's daemons.
of_profile() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)
    if [ "$PROFILE" = site ]; then
        [[ "$cmd" == *"$SITE_CONF_MARK"* ]]
    else
        [[ "$cmd" != *"$SITE_CONF_MARK"* ]]
    fi
}
SITE_CONF_MARK=/etc/slurm-site/
DAEMON_ARGS=()
[ "$PROFILE" = site ] && DAEMON_ARGS=(-f "$CONF")

stop_daemon() { # stop_daemon NAME PIDFILE
    local name=$1 pidfile=$2 pids pid _
    pids=$(cat "$pidfile" 2>/dev/null || true)
    # Daemons of an earlier run whose pid file is gone: only this exact program name, and
    # (slurmctld/slurmd, which both profiles run) only this profile's.
    local stale
    for stale in $(pgrep -x "$name" || true); do
        if [ "$name" = slurmdbd ] || of_profile "$stale"; then pids="$pids $stale"; fi
    done
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
        /usr/sbin/slurmctld "${DAEMON_ARGS[@]}" -c -i
    else
        # A live controller restarted for a new config: keep its jobs (running steps survive).
        log "starting slurmctld (saved state kept) and slurmd"
        /usr/sbin/slurmctld "${DAEMON_ARGS[@]}" -i
    fi
    /usr/sbin/slurmd "${DAEMON_ARGS[@]}"
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
    local confs=("$CONF" "$CONF_DIR/gres.conf")
    if [ "$PROFILE" = site ]; then
        write_site_conf
        confs+=("$CONF_DIR/cgroup.conf" "$CONF_DIR/slurmdbd.conf")
        ensure_mariadb
        ensure_slurmdbd "$force"
        # Before slurmctld starts: it registers with slurmdbd under its ClusterName.
        ensure_associations
    else
        write_conf
    fi
    local hash
    hash=$(cat "${confs[@]}" | sha256sum | cut -d' ' -f1)
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
    log "cluster ready ($PROFILE profile): partitions $(sinfo -h -o %P | tr '\n' ' ')node $NODE, $(sinfo -h -N -n "$NODE" -o %c | head -n1) CPUs"
    # For callers: `export "$(scripts/slurm-local-cluster.sh ... | grep ^SLURM_CONF=)"`.
    printf 'SLURM_CONF=%s\n' "$CONF"
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
    # MariaDB is left running (cheap, and a restart then takes ~3 s instead of ~15 s).
    [ "$PROFILE" = site ] && stop_daemon slurmdbd "$DBD_PID"
    rm -f "$HASH_FILE"
    ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' ;;
*) die "unknown command '$1' (setup|--restart|status|stop)" ;;
esac
