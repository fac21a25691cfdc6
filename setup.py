"""Builds the optional compiled order-book side (actors/feed/_book.c); everything else is in pyproject.toml.

Without a C compiler the build only warns and actors/feed/book.py uses its pure-Python side (same results).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("actors.feed._book", ["actors/feed/_book.c"], optional=True,
                             extra_compile_args=["-O2"])])
