"""Ways media reaches the engine from outside the process, one folder per transport."""
