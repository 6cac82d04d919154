"""The app's own files (icons, the built-in guide, the catalogue's parameter counts and weight signatures, the
desktop entry and the offline kit's install scripts). Installed as the package ``transfer_studio_resources`` (see
setup.py); found at run time with ``engine.paths.resource(name)``."""
