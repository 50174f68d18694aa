"""Test support code: the loopback replay server and its helpers."""
