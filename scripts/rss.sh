#!/usr/bin/env bash
# rss.sh measures quantstream convert end to end: for each model size it generates a
# Llama-shaped BF16 checkpoint (cmd/gentestdata -synthetic-size) and NVFP4 / FP8
# calibration state for it (-calib), warms the page cache, runs
#
#   passthrough                 --max-memory $PT_MEM  (default 256MiB)
#   data-free W4A16_NVFP4_CFG   --max-memory $MEM     (default 2GiB)
#   nvfp4 export (calibration)  --max-memory $MEM
#   fp8 export (calibration)    --max-memory $MEM
#
# under /usr/bin/time -v, and prints GB/s of input (quantstream's own summary) and
# peak RSS per run. Each run is repeated $RUNS times (default 3): the table shows the
# best and the median rate and the largest RSS, since the page cache and other
# processes make single runs noisy.
#
# Usage: scripts/rss.sh [SIZE...]      (default: 2.3GB 4.8GB, about 2.3 and 4.7 GB)
# Env:   MEM, PT_MEM, RUNS, WORKDIR (default: a temp dir, removed at the end unless
#        KEEP=1; existing models in WORKDIR are reused).
set -euo pipefail

cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(2.3GB 4.8GB)
MEM=${MEM:-2GiB}
PT_MEM=${PT_MEM:-256MiB}
RUNS=${RUNS:-3}
if [ -z "${WORKDIR:-}" ]; then
	WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/quantstream-rss.XXXXXX")
	[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORKDIR"' EXIT
fi
mkdir -p "$WORKDIR/bin"
go build -o "$WORKDIR/bin/" ./cmd/quantstream ./cmd/gentestdata
qs="$WORKDIR/bin/quantstream"
gen="$WORKDIR/bin/gentestdata"
[ -x /usr/bin/time ] || { echo "rss.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }

rows=()
for size in "${sizes[@]}"; do
	m="$WORKDIR/model-$size"
	if [ ! -f "$m/config.json" ]; then
		"$gen" -synthetic-size "$size" -out "$m" >&2
		for f in nvfp4 fp8; do "$gen" -synthetic-size "$size" -calib "$f" -out "$m-$f" >&2; done
	fi
	gb=$(du -b "$m"/*.safetensors | awk '{s += $1} END {printf "%.2f", s / 1e9}')
	cat "$m"/*.safetensors >/dev/null # warm cache
	for mode in passthrough datafree_w4a16_nvfp4 nvfp4 fp8; do
		case $mode in
		passthrough) args=(--in "$m"); mem=$PT_MEM ;;
		datafree_w4a16_nvfp4) args=(--in "$m" --recipe W4A16_NVFP4_CFG); mem=$MEM ;;
		*) args=(--in "$m" --in "$m-$mode"); mem=$MEM ;;
		esac
		rates=() rss=0
		for _ in $(seq "$RUNS"); do
			rm -rf "$WORKDIR/out"
			/usr/bin/time -v "$qs" convert "${args[@]}" --out "$WORKDIR/out" --max-memory "$mem" \
				>"$WORKDIR/stdout" 2>"$WORKDIR/time" || { cat "$WORKDIR/stdout" "$WORKDIR/time" >&2; exit 1; }
			rates+=("$(grep -o '[0-9.]* GB/s' "$WORKDIR/stdout" | tail -1 | cut -d' ' -f1)")
			kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORKDIR/time")
			((kb > rss)) && rss=$kb
		done
		rm -rf "$WORKDIR/out"
		sorted=$(printf '%s\n' "${rates[@]}" | sort -g)
		best=$(tail -1 <<<"$sorted")
		median=$(sed -n "$(((RUNS + 1) / 2))p" <<<"$sorted")
		rows+=("$(printf '%-8s %-22s %-8s %8s %8s %10d' "$gb" "$mode" "$mem" "$best" "$median" $((rss / 1024)))")
	done
done
printf '%-8s %-22s %-8s %8s %8s %10s\n' "GB in" "mode" "budget" "best" "median" "peak MiB"
printf '%s\n' "${rows[@]}"
