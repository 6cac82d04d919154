"""Packaging beyond what pyproject.toml can say: the repository's top-level ``resources/`` folder is installed as
the package ``transfer_studio_resources`` (package data), so that a wheel, a non-editable install and a bundle
carry the icon, the guide and the catalogue's tables. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["engine", "engine.*", "gui", "gui.*"]) + ["transfer_studio_resources"],
    package_dir={"transfer_studio_resources": "resources"},
)
