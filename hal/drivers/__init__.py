"""Sensor drivers that run unchanged on CPython and MicroPython: each takes a bus object and an optional clock."""
