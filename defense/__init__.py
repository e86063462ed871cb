"""Defenses (training objectives), the command line and the experiment runner."""
