"""Tests of the example applications under ``examples/``, one package per example."""
