"""Registry promotion: an evaluated generator becomes `challenger`, `champion` if it wins."""
