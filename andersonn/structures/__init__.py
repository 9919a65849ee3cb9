"""structures stage."""
