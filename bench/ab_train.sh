#!/usr/bin/env bash
# A/B of training speed between two frugal binaries (e.g. before and after a refactor), interleaved rounds:
#   bash bench/ab_train.sh OLD_BIN NEW_BIN [ROUNDS]        (MNIST from FRUGAL_DATA, CIFAR-10 from CIFAR_ROOT)
# Prints each run's train img/s (metrics.train_images_per_second, the first 5 steps excluded) and the medians.
set -euo pipefail
a=$1; b=$2; rounds=${3:-3}
cifar_root=${CIFAR_ROOT:-../shared/datasets}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
for model in lenet5 cnn resnet20; do
  ds=mnist; steps=300; extra=()
  [ $model = resnet20 ] && { ds=cifar10; steps=60; extra=(--set data_dir="$cifar_root"); }
  for r in $(seq "$rounds"); do
    for side in A B; do
      bin=$a; [ $side = B ] && bin=$b
      "$bin" train --set model=$model --set dataset=$ds "${extra[@]}" --set epochs=1 --set max_steps=$steps \
          --set val_split=0 -q --out "$out/$side" > /dev/null
      python3 -c "import json,sys; print('$model', '$side', json.load(open('$out/$side/results.json'))['metrics']['train_images_per_second'])"
    done
  done
done | tee "$out/runs.txt"
python3 - "$out/runs.txt" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, s, v = line.split(); d[(m, s)].append(float(v))
for m in ["lenet5", "cnn", "resnet20"]:
    a, b = statistics.median(d[(m, "A")]), statistics.median(d[(m, "B")])
    print(f"{m:9s} A {a:8.0f} img/s   B {b:8.0f} img/s   B/A {b / a:.3f}")
PY
