#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm/up.sh: slurmd, slurmctld,
# then munged, each by the pid in its pid file. The state directory stays (logs, key,
# job records); --purge removes it too.
#
#   QS_SLURM_STATE  the state directory (default /tmp/qs-slurm)
set -euo pipefail

STATE=${QS_SLURM_STATE:-/tmp/qs-slurm}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_daemon slurmd
stop_daemon slurmctld
stop_daemon munged
if [[ ${1:-} == --purge ]]; then
	rm -rf "$STATE"
	echo "slurm-down: stopped; removed $STATE" >&2
else
	echo "slurm-down: stopped; state and logs kept in $STATE (--purge removes them)" >&2
fi
