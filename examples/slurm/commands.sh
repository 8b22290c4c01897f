# shellcheck shell=bash
# The quantstream command lines of the Slurm example: the one place that names them.
# Sourced by convert-array.sbatch, merge.sbatch and the test (for the single-process
# reference). Reads:
#   QS_BIN     the quantstream binary (default: quantstream on PATH)
#   QS_IN      input checkpoint directory; several, separated by ':', overlay in order
#              (each becomes one --in)
#   QS_OUT     the final output directory, on a file system every node sees
#   QS_RECIPE  ModelOpt preset or recipe file (empty: re-shard unchanged)
#   QS_FLAGS   more convert flags, split on spaces (e.g. "--max-memory 8GiB")

: "${QS_BIN:=quantstream}"

# qs_inputs: the --in flags for QS_IN, into the array qs_in.
qs_inputs() {
	local dirs d
	IFS=: read -r -a dirs <<<"${QS_IN:?QS_IN: the input checkpoint directory}"
	qs_in=()
	for d in "${dirs[@]}"; do
		qs_in+=(--in "$d")
	done
}

# qs_share I N: convert share I of N of the output shards into QS_OUT's work area.
# Redoing a share (a requeued or resubmitted task) is harmless: the same plan, the
# same bytes.
qs_share() {
	qs_inputs
	# shellcheck disable=SC2086 # QS_FLAGS is a list of flags
	"$QS_BIN" convert "${qs_in[@]}" --out "${QS_OUT:?}" ${QS_RECIPE:+--recipe "$QS_RECIPE"} --quiet \
		${SLURM_CPUS_PER_TASK:+--workers "$SLURM_CPUS_PER_TASK"} ${QS_FLAGS:-} --shard "$1/$2"
}

# qs_merge: check that every share is complete and consistent, and publish QS_OUT.
qs_merge() {
	"$QS_BIN" merge --out "${QS_OUT:?}"
}

# qs_single OUT: the same conversion in one process, into OUT (the test's reference).
qs_single() {
	qs_inputs
	# shellcheck disable=SC2086
	"$QS_BIN" convert "${qs_in[@]}" --out "$1" ${QS_RECIPE:+--recipe "$QS_RECIPE"} --quiet ${QS_FLAGS:-}
}
