"""sentinel-exp: declarative latency experiments for locally served LLMs."""

__version__ = "0.1.0"
