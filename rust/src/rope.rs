//! (module under construction; see docs/design.md for its owner and interface)
