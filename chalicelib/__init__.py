"""The control plane's domain: decisions, state, and the AWS adapters behind ports."""
