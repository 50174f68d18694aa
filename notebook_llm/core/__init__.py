"""The client core: types, errors, model strings, keys, retries, the background loop.

Nothing here imports IPython, ipywidgets, pandas or matplotlib.
"""
