#!/usr/bin/env bash
# Downloads the wheels that benchmarks/gpu_check.sh installs on the GPU machine, which has no network.
#
#   bash benchmarks/prepare_gpu_wheels.sh            # -> gpu_wheels/ (ignored by git; carry it to the GPU run)
#
# Run it on a machine that reaches PyPI. It fetches benchmarks/gpu_requirements.txt, each without dependencies,
# as wheels for CPython 3.12 on manylinux x86_64 (the GPU machine's interpreter and platform), whatever Python
# runs this script. GPUtil ships no wheel, only a source archive of pure Python: it is built here into a
# py3-none-any wheel. The folder is emptied first, so it never holds two versions of one package.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=gpu_wheels
REQUIREMENTS=benchmarks/gpu_requirements.txt
PY=${PYTHON:-python3}
# Packages on PyPI as source archives only; each must build to a pure-Python (py3-none-any) wheel.
SOURCE_ONLY=(GPUtil)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

rm -rf "$DEST"
mkdir -p "$DEST"

binary=()
built=()
while read -r line; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -z $line ]] && continue
    name=${line%%==*}
    if printf '%s\n' "${SOURCE_ONLY[@]}" | grep -qixF "$name"; then
        built+=("$line")
    else
        binary+=("$line")
    fi
done <"$REQUIREMENTS"

# The target's tags, not this machine's: pip then refuses anything that would not install there.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DEST" "${binary[@]}"

for req in "${built[@]}"; do
    "$PY" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "$req"
done

# A wheel built from source must be pure Python, or it would be tied to this machine's interpreter.
for wheel in "$DEST"/*.whl; do
    case $wheel in
        *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*manylinux*x86_64*.whl) ;;
        *) echo "error: $wheel would not install on CPython 3.12 manylinux x86_64" >&2; exit 1 ;;
    esac
done

expected=$(grep -cvE '^[[:space:]]*(#|$)' "$REQUIREMENTS")
found=$(ls "$DEST"/*.whl | wc -l)
if [[ $found -ne $expected ]]; then
    echo "error: $found wheels in $DEST for $expected requirements in $REQUIREMENTS" >&2
    exit 1
fi

ls -1 "$DEST"
echo "$DEST: $found wheels, $(du -sh "$DEST" | cut -f1)"
# The device tool sends the working tree plus carried folders, 64 MiB at most.
tree_kib=$(git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
wheels_kib=$(du -sk "$DEST" | cut -f1)
echo "working tree ${tree_kib} KiB + $DEST ${wheels_kib} KiB = $((tree_kib + wheels_kib)) KiB (limit 65536 KiB)"
