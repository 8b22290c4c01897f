#!/usr/bin/env bash
# Run the conversion on Kubernetes: the shared volume, the Indexed Job, and the merge
# Job once every index has completed (Kubernetes has no dependency between Jobs).
# Assumes the input checkpoint is at /work/model on the volume (see README.md) and
# kubectl points at the cluster and namespace.
#
#   examples/k8s/run.sh [TIMEOUT_SECONDS]   # for the conversion, default 86400
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout=${1:-86400}

kubectl apply -f "$here/pvc.yaml"
kubectl apply -f "$here/convert-job.yaml"
# The Job ends with condition Complete (every index succeeded) or Failed (out of
# retries); poll for either.
deadline=$((SECONDS + timeout))
while :; do
	state=$(kubectl get job/quantstream-convert -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')
	case " $state " in
	*" Complete "*) break ;;
	*" Failed "*)
		echo "run.sh: quantstream-convert failed; see kubectl describe job/quantstream-convert" >&2
		exit 1
		;;
	esac
	if ((SECONDS >= deadline)); then
		echo "run.sh: quantstream-convert not complete after ${timeout}s" >&2
		exit 1
	fi
	sleep 30
done
kubectl apply -f "$here/merge-job.yaml"
kubectl wait --for=condition=complete --timeout=1h job/quantstream-merge
kubectl logs job/quantstream-merge
