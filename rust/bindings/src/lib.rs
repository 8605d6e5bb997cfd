//! placeholder while the bindings are written
