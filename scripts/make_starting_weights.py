"""Remake the starting weights of new 2-D models (napari_unetseg/_data/start_2d.safetensors).

    python scripts/make_starting_weights.py --out start_2d.safetensors

Trains a default two-class U-Net from random weights on a stack of varied synthetic planes
(``core.synthetic.varied_planes``) with dense labels, at one torch thread so that the result
depends only on the code (about 4 minutes on a laptop CPU). Copy the file into
``src/napari_unetseg/_data/`` to ship it; the packaged one was made with the defaults below.
"""

from __future__ import annotations

import argparse

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.starting_weights import (
    PRETRAINING_EPOCHS,
    PRETRAINING_PLANES,
    PRETRAINING_SEED,
)
from napari_unetseg.core.synthetic import varied_planes


def make_starting_weights(
    out: str, planes: int, epochs: int, size: int = 256, steps_per_epoch: int = 25
) -> None:
    images, labels = varied_planes(planes, seed=PRETRAINING_SEED, size=size)
    segmenter = Segmenter.create(start="random")
    config = TrainConfig(
        max_epochs=epochs,
        max_seconds=None,
        steps_per_epoch=steps_per_epoch,
        threads=1,
        # Dense labels: the image's class shares need no estimate, and the border no move.
        correct_class_shares=False,
        align_borders=False,
    )
    history = segmenter.train(images, labels, config)
    print(
        f"{history.steps} steps in {history.elapsed:.0f} s, "
        f"validation Dice {history.best_validation_dice}"
    )
    print(f"Saved {segmenter.save(out)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a new .safetensors file")
    parser.add_argument("--planes", type=int, default=PRETRAINING_PLANES)
    parser.add_argument("--epochs", type=int, default=PRETRAINING_EPOCHS)
    parser.add_argument("--size", type=int, default=256, help="side of each plane, pixels")
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    args = parser.parse_args(argv)
    make_starting_weights(args.out, args.planes, args.epochs, args.size, args.steps_per_epoch)


if __name__ == "__main__":
    main()
