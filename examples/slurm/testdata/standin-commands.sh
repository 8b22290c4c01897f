# shellcheck shell=bash
# STAND-IN for ../commands.sh while `convert --shard` and `merge` do not exist
# (issue 12). TestSlurmArray points QS_COMMANDS here; delete this file and that line
# when they land. Same functions, same variables, commands that exist today, the
# same contract:
#   qs_share I N  writes share I of N into the work area of QS_OUT, atomically,
#                 idempotently: here `quantstream plan` of the conversion (every
#                 worker must compute the same plan from headers alone).
#   qs_merge      refuses if a share is missing or inconsistent (naming it), else
#                 publishes QS_OUT atomically; run again, it finds the work done.
#   qs_single OUT the same result from one process.
# QS_STANDIN_FAIL=I makes share I fail (to test that the merge then never runs).

: "${QS_BIN:=quantstream}"

qs_inputs() {
	local dirs d
	IFS=: read -r -a dirs <<<"${QS_IN:?QS_IN: the input checkpoint directory}"
	qs_in=()
	for d in "${dirs[@]}"; do
		qs_in+=(--in "$d")
	done
}

qs_plan() {
	qs_inputs
	# shellcheck disable=SC2086
	"$QS_BIN" plan "${qs_in[@]}" ${QS_RECIPE:+--recipe "$QS_RECIPE"} ${QS_FLAGS:-}
}

qs_share() {
	local i=$1 n=$2 work=${QS_OUT:?}.shares tmp
	if [[ ${QS_STANDIN_FAIL:-} == "$i" ]]; then
		echo "stand-in: share $i fails, as QS_STANDIN_FAIL asks" >&2
		return 3
	fi
	mkdir -p "$work"
	tmp=$(mktemp -d "$work/.tmp-$i-of-$n.XXXXXX")
	qs_plan >"$tmp/plan.txt"
	rm -rf "${work:?}/$i-of-$n"
	mv "$tmp" "$work/$i-of-$n"
}

qs_merge() {
	local n=${QS_TASKS:?} work=${QS_OUT:?}.shares i tmp
	for ((i = 0; i < n; i++)); do
		[[ -f $work/$i-of-$n/plan.txt ]] || {
			echo "stand-in merge: share $i of $n is missing ($work/$i-of-$n)" >&2
			return 1
		}
		cmp -s "$work/0-of-$n/plan.txt" "$work/$i-of-$n/plan.txt" || {
			echo "stand-in merge: share $i of $n computed another plan than share 0" >&2
			return 1
		}
	done
	if [[ -e $QS_OUT ]]; then
		cmp -s "$work/0-of-$n/plan.txt" "$QS_OUT/plan.txt" && return 0 # done already
		echo "stand-in merge: $QS_OUT exists with other contents" >&2
		return 1
	fi
	tmp=$(mktemp -d "$QS_OUT.tmp-XXXXXX")
	cp "$work/0-of-$n/plan.txt" "$tmp/plan.txt"
	mv "$tmp" "$QS_OUT"
}

qs_single() {
	local tmp
	tmp=$(mktemp -d "$1.tmp-XXXXXX")
	qs_plan >"$tmp/plan.txt"
	mv "$tmp" "$1"
}
