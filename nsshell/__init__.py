"""nsshell: encrypted directories that only the sessions you start in them can see."""

__version__ = "0.1.0"
