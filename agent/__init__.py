"""The agent on each Jibri instance: reports Jibri's status to the control plane and guards scale-in protection."""
