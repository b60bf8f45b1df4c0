//! Examples of the toolkit on models outside its zoo (see `examples/examples/`).
