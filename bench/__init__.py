"""The benchmark (not a test): `make bench` runs `python -m bench`; see README.md here."""
