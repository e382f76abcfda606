"""Wire frames (bytes only) and transports (the only code that talks to MPI)."""
