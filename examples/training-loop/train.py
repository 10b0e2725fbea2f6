"""A CPU-only, standard-library-only stand-in for a training loop, to watch under `sysgauge run`.

    sysgauge run --jsonl run.jsonl -- python train.py --epochs 3 --seconds-per-epoch 10

Each epoch multiplies small matrices in pure Python for --seconds-per-epoch seconds (one core busy),
grows a buffer of "activations" steadily up to --buffer-mb and frees it at the end of the epoch (memory
rises and falls), and writes a checkpoint file (disk writes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

Matrix = list[list[float]]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    columns = list(zip(*b, strict=True))
    return [[sum(x * y for x, y in zip(row, column, strict=True)) for column in columns] for row in a]


def random_matrix(size: int, rng: random.Random) -> Matrix:
    return [[rng.uniform(-1.0, 1.0) for _ in range(size)] for _ in range(size)]


def save_checkpoint(directory: Path, epoch: int, weights: Matrix, padding_bytes: int) -> Path:
    """Weights as JSON plus padding (a stand-in for optimizer state), flushed to disk."""
    path = directory / f"epoch-{epoch:03d}.ckpt"
    partial = path.with_suffix(".tmp")
    with partial.open("wb") as f:
        f.write(json.dumps({"epoch": epoch, "weights": weights}).encode())
        f.write(os.urandom(padding_bytes))
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    return path


BLOCK_BYTES = 1_000_000


def train(epochs: int, seconds_per_epoch: float, size: int, buffer_mb: float, checkpoint_dir: Path) -> None:
    rng = random.Random(0)
    weights = random_matrix(size, rng)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        activations: list[bytearray] = []
        steps = 0
        loss = 0.0
        while (elapsed := time.monotonic() - started) < seconds_per_epoch:
            batch = random_matrix(size, rng)
            out = matmul(batch, weights)
            loss = sum(abs(v) for row in out for v in row) / (size * size)
            # A small update keeps the weights bounded and changing.
            weights = [
                [0.99 * w + 0.001 * o for w, o in zip(wr, orow, strict=True)]
                for wr, orow in zip(weights, out, strict=True)
            ]
            # The buffer follows a ramp from 0 to buffer_mb across the epoch, in 1 MB blocks.
            while len(activations) * BLOCK_BYTES < buffer_mb * 1e6 * elapsed / seconds_per_epoch:
                block = bytearray(BLOCK_BYTES)
                block[::4096] = b"\x01" * len(range(0, BLOCK_BYTES, 4096))  # touched, so it is resident
                activations.append(block)
            steps += 1
        peak_mb = sum(len(b) for b in activations) / 1e6
        activations.clear()
        path = save_checkpoint(checkpoint_dir, epoch, weights, padding_bytes=4_000_000)
        print(f"epoch {epoch}/{epochs}: {steps} steps, loss {loss:.4f}, buffer peak {peak_mb:.0f} MB, {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seconds-per-epoch", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=48, help="matrix side (work per step grows as size^3)")
    parser.add_argument("--buffer-mb", type=float, default=200.0, help="largest buffer, reached at epoch end")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()
    train(args.epochs, args.seconds_per_epoch, args.size, args.buffer_mb, args.checkpoint_dir)


if __name__ == "__main__":
    main()
