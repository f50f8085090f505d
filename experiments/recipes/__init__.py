"""The shared recipes of experiment families (not experiments themselves), imported by the
experiment files as modules of this package: `from experiments.recipes import gan`."""
