"""What is done with a circuit once it exists: ground-truth scoring, findings."""
