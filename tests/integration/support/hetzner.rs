//! The Hetzner fake + Prism fixture.
