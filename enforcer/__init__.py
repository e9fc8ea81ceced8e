"""Stockade's enforcer: the per-host daemon that learns container profiles and enforces them."""

__version__ = "0.1.0"
