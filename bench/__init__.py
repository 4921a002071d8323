"""Benchmarks, run as scripts from the repository (``.venv/bin/python bench/NAME.py``);
modules here are also imported by each other and by their tests."""
