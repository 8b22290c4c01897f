#!/usr/bin/env bash
# Submit a quantstream conversion as a Slurm array job (one share per task) plus a
# merge job that runs only when every share succeeded (--dependency=afterok).
#
#   QS_IN=/shared/llama QS_OUT=/shared/llama-nvfp4 QS_RECIPE=W4A16_NVFP4_CFG QS_TASKS=8 \
#     examples/slurm/submit.sh [--array SPEC] [SBATCH_OPTION…]
#
# Variables: QS_IN, QS_OUT, QS_RECIPE, QS_FLAGS, QS_BIN (see commands.sh); QS_TASKS,
# the number of shares (default 4); QS_LOGS, where job logs go (default QS_OUT.logs).
# --array SPEC submits only those shares (e.g. --array 2 to redo share 2 of QS_TASKS);
# every other option goes to both sbatch calls (--partition, --time, --cpus-per-task,
# --mem, --account…).
#
# Prints QS_ARRAY_JOB=<id> and QS_MERGE_JOB=<id> on stdout (eval-able).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() {
	echo "submit.sh: $*" >&2
	exit 2
}

array=
sbatch_opts=()
while (($#)); do
	case $1 in
	--array) array=${2:?--array needs a SPEC}; shift 2 ;;
	--array=*) array=${1#--array=}; shift ;;
	-h | --help) sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) sbatch_opts+=("$1"); shift ;;
	esac
done

: "${QS_IN:?QS_IN: the input checkpoint directory (several: DIR1:DIR2)}"
: "${QS_OUT:?QS_OUT: the output directory, on a file system every node sees}"
QS_TASKS=${QS_TASKS:-4}
[[ $QS_TASKS =~ ^[1-9][0-9]*$ ]] || die "QS_TASKS=$QS_TASKS: want a positive number of shares"
array=${array:-0-$((QS_TASKS - 1))}

# Jobs may start in another directory on another node: make every path absolute now.
abs() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }
IFS=: read -r -a ins <<<"$QS_IN"
for i in "${!ins[@]}"; do
	[[ -d ${ins[$i]} ]] || die "QS_IN: ${ins[$i]} is not a directory"
	ins[i]=$(abs "${ins[i]}")
done
QS_IN=$(IFS=:; echo "${ins[*]}")
mkdir -p "$(dirname "$QS_OUT")"
QS_OUT=$(abs "$QS_OUT")
if [[ -z ${QS_BIN:-} ]]; then
	QS_BIN=$(command -v quantstream) || die "no quantstream on PATH: set QS_BIN to the binary (on a shared file system)"
fi
[[ -x $QS_BIN ]] || die "QS_BIN=$QS_BIN is not an executable"
QS_BIN=$(abs "$QS_BIN")
if [[ -n ${QS_RECIPE:-} && -f $QS_RECIPE ]]; then
	QS_RECIPE=$(abs "$QS_RECIPE") # a recipe file, not a preset name
fi
QS_LOGS=${QS_LOGS:-$QS_OUT.logs}
mkdir -p "$QS_LOGS"
QS_LOGS=$(abs "$QS_LOGS")
QS_SLURM_DIR=${QS_SLURM_DIR:-$here}
export QS_IN QS_OUT QS_TASKS QS_BIN QS_RECIPE QS_FLAGS QS_LOGS QS_SLURM_DIR

# --parsable prints "jobid" or "jobid;cluster".
array_job=$(sbatch --parsable --export=ALL --array="$array" \
	--output="$QS_LOGS/%x-%A_%a.out" "${sbatch_opts[@]}" "$here/convert-array.sbatch")
array_job=${array_job%%;*}
# --kill-on-invalid-dep: if a share fails, the merge is cancelled instead of pending
# forever with DependencyNeverSatisfied.
merge_job=$(sbatch --parsable --export=ALL --dependency="afterok:$array_job" --kill-on-invalid-dep=yes \
	--output="$QS_LOGS/%x-%j.out" "${sbatch_opts[@]}" "$here/merge.sbatch")
merge_job=${merge_job%%;*}

echo "submit.sh: shares $array of $QS_TASKS: array job $array_job; merge job $merge_job after it; logs in $QS_LOGS" >&2
echo "QS_ARRAY_JOB=$array_job"
echo "QS_MERGE_JOB=$merge_job"
