"""Sandbox tests for the flaky-test drill: outside the suite's collection (testpaths = tests)."""
