"""unigs_deploy.benchmarks: `unigs-bench`, speed and size measurements with JSON output."""
