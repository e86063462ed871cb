"""The tiny configs the end-to-end tests run: a grid of two defenses × two attacks on the embedded instrument set
(a few seconds of audio, two classes, a two-epoch ResNet-56), its variants, and the overrides of a tiny
``advaudio train``."""
from __future__ import annotations

TINY = """
name: tiny
train: demo
grid:
  dataset: [gm_instruments]
  frontend: [stft_db_small]
  victim: [resnet56]
  defense: [none, fgsm_mix]
  attack: [fgsm, deepfool_l2]
attack_overrides:
  fgsm: {domain: representation, norm: l2}
  deepfool_l2: {steps: 20}
evaluation:
  n_examples: 6
  eps_max: {representation: {l2: 3.0}}
  search_eps_max: {representation: {l2: 12.0}}
  n_budgets: 3
  n_boot: 200
  batch_size: 8
  unbounded_steps: 5
overrides:
  dataset.classes: [flute, hi_hat]
  dataset.clips_per_class: 6
  dataset.clip_seconds: 0.25
  dataset.sample_rate: 8000
  dataset.split.test_fraction: 0.34
  frontend.n_fft: 128
  frontend.hop: 64
  train.epochs: 2
  train.batch_size: 8
"""
RESUMED = TINY.replace("train.epochs: 2", "train.epochs: 4")
"""The tiny grid the kill -9 and Ray-crash tests interrupt and resume (four epochs: a kill after the first epoch
leaves three to go), compared with one uninterrupted local run (``tests/conftest.py`` ``clean_tables``)."""
TINY_FGSM = TINY.replace("attack: [fgsm, deepfool_l2]", "attack: [fgsm]").replace("  deepfool_l2: {steps: 20}\n", "")
"""The tiny grid with FGSM only (fastest: for tests of what surrounds a grid)."""

TWO_TABLE_ATTACKS = TINY.replace("attack_overrides:", "table_attacks: [fgsm, deepfool_l2]\nattack_overrides:")
"""The tiny grid with both attacks as table attacks: the per-clip worst case over them is logged (ensemble_l2)."""

TINY_TRAIN = [
    "dataset.classes=[flute, hi_hat]", "dataset.clips_per_class=16", "dataset.clip_seconds=0.25",
    "dataset.sample_rate=8000", "dataset.split.test_fraction=0.3", "dataset.split.val_fraction=0.3",
    "frontend=stft_db_small", "frontend.n_fft=128", "frontend.hop=64", "victim=koerich_cnn2d", "victim.dense=64",
    "train.epochs=8", "train.batch_size=4",
]
