#!/usr/bin/env bash
# Does a wheel built from this checkout carry what the installed tool needs? Build it, install it into
# an empty venv (its dependencies only, no extras), and from a directory unrelated to the checkout:
# compile a zoo model for the host and for armv7-neon (standalone), run both, count the ARM build's
# guest instructions, and run `face verify` twice (the second loads its networks from the compile
# cache). CI runs it; it prints the time of each step and a JSON summary as its last line.
#
#   scripts/check_wheel.sh [WORKDIR]     (default: a new temporary directory, removed at the end)
#
# Needs python3 (3.11+), network or a warm pip cache, the ARM cross toolchain and qemu-arm.
set -euo pipefail
checkout="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-}"
if [ -z "$work" ]; then
  work="$(mktemp -d /tmp/edgetvm-wheel-check.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
PY=${PYTHON:-python3}
declare -A seconds

step() {  # step NAME COMMAND...: run, time, and stop the script with the step's name on failure
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  if ! "$@"; then
    echo "check_wheel: step '$name' failed" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  seconds[$name]=$(printf '%.1f' "$(echo "$end - $start" | bc)")
  echo "check_wheel: $name: ${seconds[$name]} s" >&2
}

rm -rf "$work/wheel" "$work/venv" "$work/elsewhere" "$work/cache"
step wheel "$PY" -m pip wheel --no-deps -q -w "$work/wheel" "$checkout"
wheel=$(ls "$work"/wheel/edgetvm-*.whl)
step venv "$PY" -m venv "$work/venv"
step install "$work/venv/bin/pip" install -q "$wheel"
venv_size=$(du -sm "$work/venv" | cut -f1)

# Nowhere near the checkout: nothing may be found beside it (../shared, .cache, the sources).
mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
export EDGETVM_CACHE="$work/cache"
unset EDGETVM_INSN_COUNT_SRC EDGETVM_COMPILE_CACHE PYTHONPATH
edgetvm="$work/venv/bin/edgetvm"
py="$work/venv/bin/python"

step installed_from_wheel "$py" -c "
import edgetvm, sys
assert '$checkout' not in edgetvm.__file__, edgetvm.__file__
print('edgetvm from', edgetvm.__file__, file=sys.stderr)"
step compile_host "$edgetvm" -q compile zoo:retinaface --input-shape input=1,3,160,160 -o host.so
"$py" -c "import numpy as np; np.save('x.npy', np.random.default_rng(0).standard_normal((1, 3, 160, 160)).astype('float32'))"
step run_host "$edgetvm" -q run host.so -i x.npy -o host.npz
step compile_arm "$edgetvm" -q compile zoo:retinaface --input-shape input=1,3,160,160 --target armv7-neon \
  --standalone -o arm.so
step run_arm "$edgetvm" -q run arm.so -i x.npy --emulate -o arm.npz
# Counted by the plugin built from the wheel's own qemu_insn_count.c (into $EDGETVM_CACHE/tools).
step count_arm "$py" -c "
import numpy as np
from edgetvm import emulate
assert emulate.INSN_COUNT_SOURCE.is_relative_to('$work/venv'), emulate.INSN_COUNT_SOURCE
n = emulate.instructions_per_inference('arm.so', [np.load('x.npy')], cpu='cortex-a7')
host, arm = np.load('host.npz'), np.load('arm.npz')
worst = max(float(np.abs(host[k] - arm[k]).max() / (np.abs(host[k]).max() + 1e-6)) for k in host.files)
assert worst < 1e-3, worst
open('count.txt', 'w').write(str(n))
print(f'{n} guest instructions per inference; ARM vs host outputs within {worst:.1e} relative')"
a=$("$py" -c "from edgetvm.zoo import fetch; print(fetch('astronaut'))")
b=$("$py" -c "from edgetvm.zoo import fetch; print(fetch('grace_hopper'))")
step verify_first "$edgetvm" -q face verify "$a" "$b"
step verify_second "$edgetvm" -q face verify "$b" "$a"
entries=$(find "$EDGETVM_CACHE/compiled" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l)
[ "$entries" -eq 2 ] || { echo "check_wheel: expected 2 compile cache entries, found $entries" >&2; exit 1; }
step version_only "$edgetvm" --version

printf '{"venv_mb": %s, "instructions_per_inference": %s, "compile_cache_entries": %s' \
  "$venv_size" "$(cat count.txt)" "$entries"
for name in wheel venv install compile_host run_host compile_arm run_arm count_arm verify_first verify_second version_only; do
  printf ', "%s_s": %s' "$name" "${seconds[$name]}"
done
printf '}\n'
