//! Reverse-mode automatic differentiation.
