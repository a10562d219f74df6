"""The build engine: the stage loop, instruction handlers, and the RUN runner."""
