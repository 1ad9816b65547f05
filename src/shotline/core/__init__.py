"""The pure core: briefs, plans, capabilities, prices and content keys.

Nothing here does I/O beyond reading the packaged model table and a user's overrides
file: every function is a function of its arguments, so it is tested without a database,
a provider or a clock.
"""
