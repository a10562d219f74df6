"""Tests of kanipy.fs."""
