# Sourced by the experiment scripts: the repository root as working folder, the binary ($f) and the data roots.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
f=${FRUGAL_BIN:-./build/frugal}
export FRUGAL_DATA=${FRUGAL_DATA:-$root/../shared/datasets}

# resolve_model CONFIG[=RUN_DIR]: sets model (the config name) and m (its trained model.bin, by default in
# runs/foundation/CONFIG); exits with a hint when the model has not been trained.
resolve_model() {
  model=${1%%=*}
  local dir=runs/foundation/$model
  [[ "$1" == *=* ]] && dir=${1#*=}
  m=$dir/model.bin
  test -f "$m" || { echo "missing $m: run experiments/run.sh foundation $model first" >&2; exit 1; }
}
