"""Runtime helpers below every model and training module: process groups, seeding, device choice,
mixed precision, logging set-up and where local files and text towers come from."""
