"""Install stage: turn a bundle and an inventory into a running cluster over SSH."""
