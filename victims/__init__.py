"""Victims: front-ends, normalisation, backbones and the waveform-to-logits victim module."""
