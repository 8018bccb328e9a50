"""Sample async classes in every shape the facade generator handles (their twins are its tests)."""
