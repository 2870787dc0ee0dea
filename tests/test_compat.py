"""avalanche_lpa.compat: timm's augment ops on every Pillow, as the authors' runs had them.

Every op of the authors' RandAugment policy (CIFAR at 32 px, ImageNet at 224 px) at its extreme levels on RGB
and greyscale images, and a long random draw of the policy that reaches the 0-bit posterize and must not raise.
"""
import copy
import pickle
import random

import numpy as np
import pytest
from PIL import Image

from avalanche_lpa.compat import PillowSafeOp, augment_ops, pillow_safe_augment
from avalanche_lpa.data import AUTHORS_AUTO_AUGMENT, train_transform

POLICIES = {
    "cifar": lambda: train_transform(32),
    "imagenet": lambda: train_transform(224, random_resized_crop=True),
}
# The one RGB colour timm fills with (ImageNet's mean) and its luma, what a greyscale image gets instead.
IMAGENET_FILL = (124, 116, 104)
IMAGENET_FILL_LUMA = round(124 * 0.299 + 116 * 0.587 + 104 * 0.114)


def _image(mode: str, size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _rand_augment(transform):
    return next(step for step in transform.transforms if type(step).__name__ == "RandAugment")


def _at_level(op, level: float):
    fixed = copy.deepcopy(op)
    fixed.prob, fixed.magnitude, fixed.magnitude_std = 1.0, level, 0.0
    return fixed


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("level", [0, 10])
def test_every_op_of_the_policy_at_its_extreme_levels(policy, mode, level):
    rand_augment = _rand_augment(POLICIES[policy]())
    assert len(rand_augment.ops) == 15 and all(isinstance(op.aug_fn, PillowSafeOp) for op in rand_augment.ops)
    size = 32 if policy == "cifar" else 224
    image = _image(mode, size)
    random.seed(0)
    for op in rand_augment.ops:
        for _ in range(4):  # the signed ops draw their sign at random
            out = _at_level(op, level)(image)
            assert out.mode == mode and out.size == image.size, op.name


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_posterize_to_zero_bits_is_a_black_image_as_on_old_pillow(mode):
    # What Pillow <= 12 returned for bits=0 (and so what the authors' runs trained on); Pillow 13 raises.
    posterize = next(op for op in _rand_augment(train_transform(32)).ops if op.name == "PosterizeIncreasing")
    out = _at_level(posterize, 10)(_image(mode, 32))
    assert out.mode == mode and np.asarray(out).max() == 0
    kept = _at_level(posterize, 0)(_image(mode, 32))  # 4 bits kept: not black, low bits cleared
    assert np.asarray(kept).max() > 0 and (np.asarray(kept) & 0x0F).max() == 0


def test_greyscale_images_are_filled_with_the_luma_of_the_fill_colour():
    rotate = next(op for op in _rand_augment(train_transform(32)).ops if op.name == "Rotate")
    assert tuple(rotate.kwargs["fillcolor"]) == IMAGENET_FILL
    white = Image.new("L", (32, 32), 255)
    out = np.asarray(_at_level(rotate, 10)(white))  # 30 degrees: the corners are fill
    assert out[0, 0] == IMAGENET_FILL_LUMA and out[16, 16] == 255
    rgb = np.asarray(_at_level(rotate, 10)(Image.new("RGB", (32, 32), (255, 255, 255))))
    assert tuple(rgb[0, 0]) == IMAGENET_FILL  # RGB images keep timm's colour


@pytest.mark.slow
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_long_random_draw_of_the_policy_never_raises(policy):
    transform = POLICIES[policy]()
    rand_augment = _rand_augment(transform)
    posterize = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    bits_asked = []
    level_fn = posterize.level_fn
    posterize.level_fn = lambda level, hparams: bits_asked.append(level_fn(level, hparams)[0]) or level_fn(level, hparams)
    image = _image("RGB", 32)  # the 224 px policy's ops on a small image: the same arguments, 50x cheaper
    random.seed(1993)
    calls = 20_000
    for _ in range(calls):
        out = rand_augment(image)
        assert out.size == image.size
    # the draw reached the level that asks for 0 bits (about 1 in 700 calls): it is the case that used to raise
    assert 0 in bits_asked


def test_the_fix_is_idempotent_picklable_and_applies_to_other_timm_policies():
    transform = train_transform(32)
    ops = list(augment_ops(transform))
    assert len(ops) == 15
    pillow_safe_augment(transform)
    assert all(isinstance(op.aug_fn, PillowSafeOp) and not isinstance(op.aug_fn.function, PillowSafeOp) for op in ops)
    restored = pickle.loads(pickle.dumps(transform))  # DataLoader workers and Avalanche's checkpoints pickle it
    assert isinstance(_rand_augment(restored).ops[0].aug_fn, PillowSafeOp)
    # timm's AutoAugment policy v0 keeps 0 bits at level 0 of its Posterize: wrapped too
    original = train_transform(32, auto_augment="v0")
    posterize = [op for op in augment_ops(original) if op.name == "Posterize"]
    assert posterize and all(isinstance(op.aug_fn, PillowSafeOp) for op in posterize)
    assert np.asarray(_at_level(posterize[0], 0)(_image("RGB", 32))).max() == 0
    assert train_transform(32, auto_augment=AUTHORS_AUTO_AUGMENT) is not None


# -- the index of every workaround ---------------------------------------------------------------------------------
def _resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(dotted)


def test_every_listed_workaround_exists_and_every_compat_module_is_listed():
    from pathlib import Path

    from avalanche_lpa.compat import WORKAROUNDS

    assert all(_resolve(w.fix) is not None for w in WORKAROUNDS)
    compat = Path(__file__).resolve().parents[1] / "avalanche_lpa" / "compat"
    modules = {p.stem for p in compat.glob("*.py") if p.stem != "__init__"}
    listed = {w.fix.split(".")[2] for w in WORKAROUNDS if w.fix.startswith("avalanche_lpa.compat.")}
    assert modules == listed  # no fix in compat/ without its entry, no entry pointing at a module that is gone


def test_the_compatibility_page_shows_the_list():
    from pathlib import Path

    from avalanche_lpa.compat import WORKAROUNDS

    page = (Path(__file__).resolve().parents[1] / "docs" / "compatibility.md").read_text()
    rows = [f"| {w.library} | {w.upstream} | `{w.fix.removeprefix('avalanche_lpa.')}` |" for w in WORKAROUNDS]
    table = page.split("| library | what upstream does | our fix |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    assert table.splitlines() == rows


def test_the_csv_logger_appends_to_a_resumed_runs_files_and_sets_what_avalanches_sets(tmp_path):
    from avalanche.logging import CSVLogger

    from avalanche_lpa.compat.avalanche_csv import AppendingCSVLogger

    fresh = CSVLogger(str(tmp_path / "avalanche"))
    ours = AppendingCSVLogger(str(tmp_path / "ours"))
    assert sorted(vars(ours)) == sorted(vars(fresh))  # the attributes Avalanche's callbacks read
    for logger in (fresh, ours):
        print("0,0,0.5,0,1.2,0", file=logger.training_file, flush=True)
        logger.close()
    headers = {name: (tmp_path / "avalanche" / name).read_text().splitlines()[0]
               for name in ("training_results.csv", "eval_results.csv")}
    again = AppendingCSVLogger(str(tmp_path / "ours"))  # a resumed session of the run
    print("1,0,0.6,0,1.1,0", file=again.training_file, flush=True)
    again.close()
    rows = (tmp_path / "ours" / "training_results.csv").read_text().splitlines()
    assert rows == [headers["training_results.csv"], "0,0,0.5,0,1.2,0", "1,0,0.6,0,1.1,0"]
    assert (tmp_path / "ours" / "eval_results.csv").read_text().splitlines() == [headers["eval_results.csv"]]
