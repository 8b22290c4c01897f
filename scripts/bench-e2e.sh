#!/usr/bin/env bash
# bench-e2e.sh prints quantstream convert's end-to-end figures next to the two
# ceilings of the same machine, measured in the same run, so that every figure is a
# ratio anyone can reproduce:
#
#   read ceiling   cat of the input (warm page cache), GB/s of input
#   write ceiling  dd of as many bytes as the conversion wrote, with fsync (the
#                  writer syncs every shard), into the output's file system
#
# Models: a TinyLlama-1.1B-shaped BF16 Llama of 2.25 GB (22 layers, hidden 2048,
# intermediate 5632, vocab 32000) from cmd/gentestdata -synthetic-size 2.25GB
# -shape tinyllama, with NVFP4 and FP8 calibration state (-calib); with BENCH_LARGE=1
# also a Llama-3-8B-shaped one of 16.1 GB (vocab 128256). Modes, each RUNS times
# (default 3) after a warm-up read, reporting the median:
#
#   datafree    --recipe W4A16_NVFP4_CFG     --max-memory $MEM (default 512MiB)
#   nvfp4       calibration state (NVFP4)    --max-memory $MEM
#   fp8         calibration state (FP8)      --max-memory $MEM
#   passthrough no recipe, no state          --max-memory $MEM
#
# (the large model at $LARGE_MEM, default 256MiB). Columns: GB/s of input (median),
# CPU seconds (user+sys) per GB of input (the machine is shared, so this says more
# than wall time under load), peak RSS (GNU time), the ceilings and the rate as a
# fraction of the write ceiling at that output size.
#
# Env: RUNS, MEM, LARGE_MEM, BENCH_LARGE=1, MODES (default "datafree nvfp4 fp8
# passthrough"), BENCH_DIR (keep models there and reuse them; default a temp dir,
# removed at the end), BENCH_OUT (where outputs go, default BENCH_DIR: set
# /dev/shm to take the disk out of the figures), WORKERS (--workers, default unset),
# QS (a quantstream binary to measure instead of this tree's, e.g. an older build).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MEM=${MEM:-512MiB}
LARGE_MEM=${LARGE_MEM:-256MiB}
MODES=${MODES:-datafree nvfp4 fp8 passthrough}
[ -x /usr/bin/time ] || { echo "bench-e2e.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }
tmp=
if [ -z "${BENCH_DIR:-}" ]; then
	BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/quantstream-bench.XXXXXX")
	tmp=$BENCH_DIR
fi
BENCH_OUT=${BENCH_OUT:-$BENCH_DIR}
mkdir -p "$BENCH_DIR/bin" "$BENCH_OUT"
out=$(mktemp -d "$BENCH_OUT/out.XXXXXX")
trap 'rm -rf "$out" $tmp' EXIT
go build -o "$BENCH_DIR/bin/" ./cmd/quantstream ./cmd/gentestdata
qs=${QS:-$BENCH_DIR/bin/quantstream}
gen=$BENCH_DIR/bin/gentestdata

models=("2.25GB tinyllama $MEM")
[ "${BENCH_LARGE:-0}" = 1 ] && models+=("16.1GB llama3-8b $LARGE_MEM")

median() { sort -g | sed -n "$(((RUNS + 1) / 2))p"; }
# seconds SECS BYTES → GB/s
rate() { awk -v s="$1" -v b="$2" 'BEGIN { printf "%.2f", b / 1e9 / s }'; }

rows=()
for spec in "${models[@]}"; do
	read -r size shape mem <<<"$spec"
	m=$BENCH_DIR/$shape-$size
	if [ ! -f "$m/config.json" ]; then
		"$gen" -synthetic-size "$size" -shape "$shape" -out "$m" >&2
		for f in nvfp4 fp8; do "$gen" -synthetic-size "$size" -shape "$shape" -calib "$f" -out "$m-$f" >&2; done
	fi
	in=$(du -b "$m"/*.safetensors | awk '{s += $1} END {print s}')
	cat "$m"/*.safetensors >/dev/null # warm
	reads=()
	for _ in $(seq "$RUNS"); do
		t0=$(date +%s.%N)
		cat "$m"/*.safetensors >/dev/null
		reads+=("$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")
	done
	readc=$(rate "$(printf '%s\n' "${reads[@]}" | median)" "$in")
	for mode in $MODES; do
		case $mode in
		passthrough) args=(--in "$m") ;;
		datafree) args=(--in "$m" --recipe W4A16_NVFP4_CFG) ;;
		nvfp4 | fp8) args=(--in "$m" --in "$m-$mode") ;;
		*) echo "bench-e2e.sh: unknown mode $mode" >&2; exit 2 ;;
		esac
		[ -n "${WORKERS:-}" ] && args+=(--workers "$WORKERS")
		walls=() cpus=() rss=0 bytes=0 failed=
		for _ in $(seq "$RUNS"); do
			rm -rf "$out/o"
			if ! /usr/bin/time -f '%e %U %S %M' -o "$BENCH_DIR/time" "$qs" convert "${args[@]}" --out "$out/o" \
				--max-memory "$mem" --quiet >"$BENCH_DIR/log" 2>&1; then
				failed=1
				break
			fi
			read -r wall user sys kb <"$BENCH_DIR/time"
			walls+=("$wall")
			cpus+=("$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')")
			((kb > rss)) && rss=$kb
			bytes=$(du -bc "$out/o"/*.safetensors | tail -1 | cut -f1)
		done
		rm -rf "$out/o"
		if [ -n "$failed" ]; then
			# A refusal (a budget too small) is a figure too: say it, go on.
			cat "$BENCH_DIR/log" >&2
			rows+=("$(printf '%-7s %-12s %-8s  failed: %s' "$(awk -v b="$in" 'BEGIN { printf "%.2f", b / 1e9 }')" "$mode" "$mem" \
				"$(grep -m1 -o 'smallest memory budget[^:]*: --max-memory [^ ;]*\|error.*' "$BENCH_DIR/log" | head -c 120)")")
			continue
		fi
		wall=$(printf '%s\n' "${walls[@]}" | median)
		cpu=$(printf '%s\n' "${cpus[@]}" | median)
		# The write ceiling at this output size: dd with fsync, as the writer syncs.
		writes=()
		for _ in $(seq "$RUNS"); do
			t0=$(date +%s.%N)
			dd if=/dev/zero of="$out/dd" bs=16M count=$(((bytes + (16 << 20) - 1) / (16 << 20))) conv=fsync status=none
			writes+=("$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")
			rm -f "$out/dd"
		done
		wsecs=$(printf '%s\n' "${writes[@]}" | median)
		gbs=$(rate "$wall" "$in")
		# The rate the write alone would allow, in GB/s of input.
		wcap=$(awk -v s="$wsecs" -v i="$in" 'BEGIN { printf "%.2f", i / 1e9 / s }')
		rows+=("$(printf '%-7s %-12s %-8s %7s %8s %9d %8.2f %9s %10s %8s' \
			"$(awk -v b="$in" 'BEGIN { printf "%.2f", b / 1e9 }')" "$mode" "$mem" "$gbs" \
			"$(awk -v c="$cpu" -v b="$in" 'BEGIN { printf "%.2f", c / (b / 1e9) }')" $((rss / 1024)) \
			"$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" "$readc" "$wcap" \
			"$(awk -v g="$gbs" -v w="$wcap" 'BEGIN { printf "%.0f%%", 100 * g / w }')")")
	done
done
echo "quantstream convert, end to end: median of $RUNS warm runs; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); outputs in $BENCH_OUT"
printf '%-7s %-12s %-8s %7s %8s %9s %8s %9s %10s %8s\n' "GB in" "mode" "budget" "GB/s" "cpu s/GB" "peak MiB" "GB out" "read GB/s" "write GB/s" "of write"
printf '%s\n' "${rows[@]}"
echo "read GB/s: cat of the input; write GB/s: dd of the output's size with fsync, in GB of input per second"
