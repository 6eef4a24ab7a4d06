"""Device identity: how the agent proves who it is to DPS and IoT Hub (symmetric key, X.509, TPM, connection string)."""
