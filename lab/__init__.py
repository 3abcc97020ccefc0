"""The air-gap lab: real nodes in network namespaces, for tests, the demo and benchmarks."""
