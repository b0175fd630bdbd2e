//! Hetzner lifecycle against the fake API behind Prism (see tests/support/hetzner_fake.py).
