"""Packages by discovery, not by a list: a new sub-package can never be missing from a
non-editable install (the Docker image, docker/install.sh); tests/test_packaging.py imports
every module from one. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

# The bundled personas live at the top level (personas/) for users to read, and ship inside
# bot (package-dir in pyproject.toml), so discovery alone would not find them.
setup(
    packages=[
        *find_packages(include=["bot", "bot.*", "adapters", "adapters.*"]),
        "bot.bundled_personas",
    ]
)
