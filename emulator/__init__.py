"""Stand-ins for the world in demos and tests: board/ (sensors, buses, TPM, boot), hub/ (IoT Hub + DPS)."""
