"""Build stage: turn upstream registries, repositories and files into one bundle file."""
