# shellcheck shell=bash
# Shared by up.sh and down.sh: the daemons are found by their pid files under
# $STATE/run, never by name, so a site Slurm on the same machine is never touched.

# proc_is PID NAME: process PID runs and is NAME (a pid reused by another program does
# not count, nor a zombie waiting for an init that does not reap: pid 1 of a container
# often does not).
proc_is() {
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	[[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
	# Field 3 of /proc/PID/stat is the state (the command name, field 2, has no spaces here).
	[[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# pid_alive FILE: the daemon FILE is named after (slurmd.pid: slurmd) runs with the pid
# FILE holds. The daemon removes FILE when it exits, so FILE may vanish at any moment.
pid_alive() {
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	proc_is "$pid" "$(basename "$1" .pid)"
}

# stop_daemon NAME: TERM the daemon of $STATE/run/NAME.pid, wait up to 10s for it to
# exit, then KILL it; remove the pid file.
stop_daemon() {
	local pidfile=$STATE/run/$1.pid pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 0
	if proc_is "$pid" "$1"; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			proc_is "$pid" "$1" || break
			sleep 0.2
		done
		if proc_is "$pid" "$1"; then
			echo "slurm: $1 ($pid) ignored TERM for 10s; killing it" >&2
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}
