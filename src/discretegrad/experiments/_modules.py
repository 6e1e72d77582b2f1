"""Imports every experiment module (the one list of them)."""
