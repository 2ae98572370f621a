#!/usr/bin/env bash
# deploy/helm/check.sh - `make deploy-check`: the Helm chart lints and every object it
# renders is valid against the Kubernetes API schemas, with the default values and
# with each example values file in deploy/helm/examples/.
#
# Schemas: kubernetes-validate (PyPI, dev extra) ships them; --strict also refuses
# fields the API does not know (a misspelled `readinessProbe` would otherwise be
# dropped silently by the API server). Runs offline once Helm is built.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CHART="$SCRIPT_DIR/meterline"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion is >=1.25) that
# kubernetes-validate still ships schemas for; also checked against its newest.
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.33.0 1.37.0"}
VALIDATE=${VALIDATE:-$REPO_ROOT/.venv/bin/kubernetes-validate}
HELM=$(bash "$SCRIPT_DIR/helm-tools.sh")

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

values_sets=("default")
for f in "$SCRIPT_DIR"/examples/*.yaml; do values_sets+=("$f"); done

for values in "${values_sets[@]}"; do
  args=()
  [[ "$values" != default ]] && args=(-f "$values")
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict "$CHART" "${args[@]}"
  for kube in $KUBE_VERSIONS; do
    "$HELM" template meterline "$CHART" --namespace meterline --kube-version "$kube" \
      "${args[@]}" > "$out/$name-$kube.yaml"
    "$VALIDATE" --strict --quiet -k "$kube" "$out/$name-$kube.yaml"
    echo "deploy-check: $name values, Kubernetes $kube: $(grep -c '^kind:' "$out/$name-$kube.yaml") objects valid"
  done
done
