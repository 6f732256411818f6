"""The simulated world: stand-ins for AWS and Jibri. Never shipped to Lambda."""
