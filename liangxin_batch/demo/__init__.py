"""The quickstart manifest `liangxin-batch demo` runs, shipped as package data."""
