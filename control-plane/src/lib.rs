//! Veza control plane.
