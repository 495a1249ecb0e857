"""Datasets: raw sources (MNIST, FSDD, backgrounds) and the two benchmarks."""
