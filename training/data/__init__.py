"""Data sets read from their standard layouts, decoded and cached."""
