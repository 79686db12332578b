//! DNS-01 solvers (placeholder until the solver module lands).
