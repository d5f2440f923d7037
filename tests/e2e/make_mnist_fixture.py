#!/usr/bin/env python3
"""Writes small MNIST-format IDX files (a bright 6x6 square whose position is the label, on noise) into DIR, for
end-to-end tests that need short epochs. Usage: make_mnist_fixture.py DIR N_TRAIN N_TEST"""
import os, random, struct, sys

root, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
rng = random.Random(3)


def make(n, img, lab):
    px, labels = bytearray(), bytearray()
    for _ in range(n):
        k = rng.randrange(10); labels.append(k); oy, ox = 2 + (k // 5) * 12, 1 + (k % 5) * 5
        for y in range(28):
            for x in range(28):
                v = rng.randrange(60) + (180 if oy <= y < oy + 6 and ox <= x < ox + 6 else 0)
                px.append(min(v, 255))
    open(os.path.join(root, img), "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + px)
    open(os.path.join(root, lab), "wb").write(struct.pack(">II", 0x801, n) + labels)


make(n_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
make(n_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
