#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster on this machine, without systemd:
# munged, slurmctld and slurmd started by hand, everything they write kept under one
# state directory. Idempotent: run it again and it returns at once if the cluster
# answers, or restarts whatever daemon is missing.
#
#   scripts/slurm/up.sh                  # install (Debian, root), configure, start, wait for idle
#   scripts/slurm/up.sh --status         # exit 0 if it is up; change nothing
#   eval "$(scripts/slurm/up.sh --env)"  # the environment that client commands need
#   scripts/slurm/down.sh                # stop it
#
# Environment:
#   QS_SLURM_STATE       state directory (default /tmp/qs-slurm)
#   QS_SLURM_PORT        slurmctld port; slurmd uses the next one (default 16817, away
#                        from Slurm's own 6817/6818 so a site cluster is never touched)
#   QS_SLURM_NO_INSTALL  1: never run apt-get; fail if the packages are missing
#   QS_SLURM_TIMEOUT     seconds to wait for the node to become idle (default 60)
#
# Client commands (sbatch, squeue, sinfo, scontrol) find this cluster through
# SLURM_CONF=$QS_SLURM_STATE/etc/slurm.conf, which this script prints at the end.
#
# What this sandbox needs (found by trying): no systemd, so no cgroup-based plugins —
# proctrack/linuxproc (process tracking by parent pid) and task/none; no slurmdbd, so
# accounting_storage/none and a jobcomp/filetxt log of finished jobs; munged with its
# key, socket and pid file under the state directory (it refuses a key readable by
# others, and runs as root only with --force); no cgroup.conf (read only by cgroup
# plugins).
set -euo pipefail

STATE=${QS_SLURM_STATE:-/tmp/qs-slurm}
PORT=${QS_SLURM_PORT:-16817}
TIMEOUT=${QS_SLURM_TIMEOUT:-60}
CONF=$STATE/etc/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket

env_lines() {
	echo "export SLURM_CONF=$CONF"
}

if [[ ${1:-} == --env ]]; then
	env_lines
	exit 0
fi

log() { echo "slurm-up: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

export SLURM_CONF=$CONF

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- is it up? ----------------------------------------------------------------------
node_idle() {
	# %T: node state; a single node cluster is usable when it is idle (or busy with
	# jobs: mixed/allocated).
	local st
	st=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1) || return 1
	[[ $st == idle || $st == mixed || $st == allocated ]]
}
is_up() {
	[[ -f $CONF ]] && pid_alive "$STATE/run/munged.pid" && pid_alive "$STATE/run/slurmctld.pid" &&
		pid_alive "$STATE/run/slurmd.pid" && node_idle
}
if [[ ${1:-} == --status ]]; then
	# Exit 0 (and print the environment) if the cluster is up; change nothing.
	if command -v sinfo >/dev/null && is_up; then
		env_lines
		exit 0
	fi
	log "not up (state $STATE)"
	exit 1
fi

# --- packages ---------------------------------------------------------------------
# The daemons live in /usr/sbin, which a non-login root shell may not have on PATH.
export PATH=$PATH:/usr/sbin
need_pkgs=()
for bin in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
	command -v "${bin%%:*}" >/dev/null 2>&1 || need_pkgs+=("${bin##*:}")
done
if ((${#need_pkgs[@]})); then
	[[ ${QS_SLURM_NO_INSTALL:-0} == 1 ]] && die "missing ${need_pkgs[*]} and QS_SLURM_NO_INSTALL=1"
	[[ $(id -u) == 0 ]] || die "missing ${need_pkgs[*]}; installing needs root (apt-get install slurm-wlm munge)"
	command -v apt-get >/dev/null || die "missing ${need_pkgs[*]} and no apt-get: install Slurm and MUNGE by hand"
	mkdir -p "$STATE/log"
	log "installing slurm-wlm and munge with apt-get (log: $STATE/log/apt.log)"
	t0=$SECONDS
	# --no-install-recommends: 9 packages instead of 43 (no mail server, no X libraries).
	# Debian's postinst scripts try to start the daemons; without an init system
	# invoke-rc.d declines, and where systemd runs them they use Debian's own
	# configuration, ports and munge socket, not ours: either way ours start below.
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$STATE/log/apt.log" 2>&1; then
		tail -n 20 "$STATE/log/apt.log" >&2
		die "apt-get install slurm-wlm munge failed (log: $STATE/log/apt.log)"
	fi
	log "installed in $((SECONDS - t0))s"
fi
[[ $(id -u) == 0 ]] || die "slurmd must run as root to launch jobs (this script starts it)"

# --- slurm.conf ----------------------------------------------------------------------
host=$(hostname -s)
# The node's real CPUs, sockets, cores and memory, as slurmd itself detects them; a
# node configured with more than it has is drained, with fewer wastes the machine.
hw=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
[[ $hw == *CPUs=* ]] || die "slurmd -C did not report the hardware: $hw"
conf_new=$(
	cat <<EOF
# Written by scripts/slurm/up.sh: a single-node cluster for quantstream's tests.
ClusterName=quantstream
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No systemd and no delegated cgroups here: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd, so no sacct: scontrol shows finished jobs for MinJobAge, and every
# finished job is appended to a text file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# Start a job as soon as it can run: by default the scheduling of batch jobs waits up
# to 3 s, which on this node put ~3 s between an array task's end and the next start
# (a 4-task array + merge: 8.6 s with it, 3.0 s without).
SchedulerParameters=batch_sched_delay=0
# Cores are the consumable: array tasks run side by side, one per core.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was down comes back by itself when slurmd registers again.
ReturnToService=2
# Keep finished jobs visible to scontrol for 10 minutes (tests read their state).
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if is_up && [[ $(cat "$CONF") == "$conf_new" ]]; then
	log "already up (state $STATE)"
	env_lines
	exit 0
fi

mkdir -p "$STATE"/{etc,munge,run,log,spool/ctld,spool/d}
# The socket's directory must be searchable by every user who submits jobs (munged
# warns otherwise); the key itself is readable by root only.
chmod 755 "$STATE/munge"

# --- munge --------------------------------------------------------------------------
# Our own key (not Debian's /etc/munge/munge.key): a single-node cluster only needs
# munged and the Slurm daemons to agree, and this way nothing outside $STATE changes.
if [[ ! -s $STATE/munge/munge.key ]]; then
	dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$STATE/munge/munge.key"
if ! pid_alive "$STATE/run/munged.pid"; then
	rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
	# --force: munged refuses to run as root otherwise. It forks and returns once its
	# socket is ready.
	munged --force \
		--key-file="$STATE/munge/munge.key" \
		--socket="$MUNGE_SOCKET" \
		--pid-file="$STATE/run/munged.pid" \
		--log-file="$STATE/log/munged.log" \
		--seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/log/munged.stdio" 2>&1 || {
		tail -n 20 "$STATE/log/munged.stdio" "$STATE/log/munged.log" >&2 || true
		die "munged did not start; see $STATE/log/munged.log"
	}
fi
echo ok | munge --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null ||
	die "munge round trip failed; see $STATE/log/munged.log"

if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$conf_new" ]]; then
	printf '%s\n' "$conf_new" >"$CONF"
	# A changed configuration: restart the daemons that read the old one.
	stop_daemon slurmd
	stop_daemon slurmctld
fi

# wait_until SECONDS COMMAND…: poll COMMAND every 0.2s until it succeeds, for at most
# SECONDS.
wait_until() {
	local limit=$1
	shift
	local deadline=$((SECONDS + limit))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# --- daemons -------------------------------------------------------------------------
# Both daemons fork into the background and write their pid files themselves; their
# standard streams go to files so that a caller reading our output (a test) is not
# held open by them. slurmctld keeps its state (job ids go on increasing across
# restarts, so output files named by job id never collide); -i: start even when that
# state does not fit a changed configuration.
if ! pid_alive "$STATE/run/slurmctld.pid"; then
	slurmctld -f "$CONF" -i </dev/null >>"$STATE/log/slurmctld.stdio" 2>&1 || {
		tail -n 20 "$STATE/log/slurmctld.stdio" "$STATE/log/slurmctld.log" >&2 || true
		die "slurmctld did not start; see $STATE/log/slurmctld.log"
	}
fi
wait_until 30 scontrol ping >/dev/null 2>&1 ||
	die "slurmctld does not answer; see $STATE/log/slurmctld.log"
if ! pid_alive "$STATE/run/slurmd.pid"; then
	slurmd -f "$CONF" -N "$host" </dev/null >>"$STATE/log/slurmd.stdio" 2>&1 || {
		tail -n 20 "$STATE/log/slurmd.stdio" "$STATE/log/slurmd.log" >&2 || true
		die "slurmd did not start; see $STATE/log/slurmd.log"
	}
fi
if ! wait_until "$TIMEOUT" node_idle; then
	sinfo -N -l >&2 || true
	tail -n 20 "$STATE/log/slurmd.log" "$STATE/log/slurmctld.log" >&2 || true
	die "node $host did not become idle in ${TIMEOUT}s"
fi
log "up: node $host $(sinfo -h -N -o '%T, %c CPUs, %m MB'); state and logs in $STATE"
log "use it:  export SLURM_CONF=$CONF; sinfo; sbatch …"
log "stop it: $(dirname "$0")/down.sh"
env_lines
