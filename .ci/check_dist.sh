#!/usr/bin/env bash
# The package as pip users get it: build the wheel and the sdist, install the wheel (not editable) into a fresh
# virtualenv, run a synthetic job with the console command from a folder outside the repository, then run the
# sdist's own tests from the unpacked sdist. The virtualenv sees the base interpreter's packages
# (--system-site-packages) only so that torch (~5 GB) is not installed twice; avalanche_lpa itself comes from
# the wheel, which the checks below verify.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 -m build --no-isolation --sdist --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/*.whl)
SDIST=$(ls "$WORK"/dist/*.tar.gz)
echo "built $(basename "$WHEEL") and $(basename "$SDIST")"

python3 -m venv --system-site-packages "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WHEEL"
mkdir "$WORK/outside" && cd "$WORK/outside"
"$WORK/venv/bin/python" - <<'EOF'
import avalanche_lpa, pathlib, sys
where = pathlib.Path(avalanche_lpa.__file__).resolve()
assert "site-packages" in where.parts and "venv" in where.parts, f"avalanche_lpa imported from {where}, not the wheel"
print("avalanche_lpa from the wheel:", where.parent)
EOF
"$WORK/venv/bin/avalanche-lpa" configs
"$WORK/venv/bin/avalanche-lpa" --config cifar100_quick --device cpu --output "$WORK/outside/run" \
    --set data.dataset=synthetic --set data.n_experiences=2 --set data.class_order=null \
    --set model.overrides="{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 1, num_heads: 9}" \
    --set strategy.epochs_first=1 --set strategy.train_epochs=1 --set strategy.finetune.epochs=1 \
    --set strategy.mem_size=20 --set strategy.train_mb_size=16 --set evaluation.progress_bar=false \
    --set evaluation.locality_probe_size=16
test -s "$WORK/outside/run/results.json"
"$WORK/venv/bin/python" -m avalanche_lpa --help >/dev/null
"$WORK/venv/bin/avalanche-lpa" --version
echo "wheel: the console command ran a synthetic job outside the repository"

mkdir "$WORK/sdist" && tar -xzf "$SDIST" -C "$WORK/sdist"
cd "$WORK"/sdist/avalanche*lpa-*/
for needed in tests experiments tox.ini CITATION.cff avalanche_lpa/config/shipped/cifar100_b0_10steps.yaml; do
    test -e "$needed" || { echo "error: the sdist lacks $needed"; exit 1; }
done
# The unpacked sdist first on the path (python -m pytest puts the working folder there), so its tests run
# against its own copy of the package.
OMP_NUM_THREADS=2 MPLBACKEND=Agg python3 -m pytest tests -q -p no:cacheprovider -m "not slow and not cuda" -x
python3 -c "import avalanche_lpa, sys; sys.exit(0 if '$WORK' in avalanche_lpa.__file__ else 'tests ran against ' + avalanche_lpa.__file__)"
echo "sdist: its own tests passed from the sdist"
