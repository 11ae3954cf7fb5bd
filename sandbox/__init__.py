"""A local, contract-faithful stand-in for the hosted loyalty platform, over real HTTP.

An independent reading of the vendor's pages (shared/seeds): it imports nothing from the
worker, so a misreading in the client cannot hide behind the same misreading here.
See sandbox/README.md for endpoints, the admin API, fault knobs and codes.
"""
