//! A small reader of the kernel's BTF, for struct member offsets.
