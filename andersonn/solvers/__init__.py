"""solvers stage."""
