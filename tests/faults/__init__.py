"""Fault-injection tests of the retry modes: a scripted HTTP server and a TCP proxy on loopback."""
