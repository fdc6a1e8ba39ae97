//! Shared corpora for the benchmarks.
