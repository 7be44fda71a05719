"""jwql_dramatiq: the JWQL task server rebuilt on Dramatiq and Redis.

Importing the package does no work: no config is read and no connection is opened.
"""

__version__ = "0.1.0"
