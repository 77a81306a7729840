//! A small reader of the kernel's BTF, for struct member offsets.
//!
//! aya-ebpf 0.2 has no CO-RE relocations and aya 0.14's `Btf` does not expose member
//! lookup, yet the kernel programs read `task_struct`, `file`, ... whose layouts move
//! between kernels (e.g. `task_struct.tgid` is 2420 on Debian's 6.1 and 2436 on its
//! 6.12). So the daemon reads the offsets from the running kernel's raw BTF here and
//! hands them to the programs as globals. Only what that needs is decoded: every kind
//! is sized so the type section never desyncs, but only structs/unions, modifiers and
//! ints are interpreted. Little-endian only (checked through the magic).

use std::collections::HashMap;

use openclaw_guard_common::KernelOffsets;

pub const SYS_FS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{origin}: bad BTF magic {magic:#06x} (expected 0xeb9f; only little-endian BTF is read)"
    )]
    BadMagic { origin: String, magic: u16 },
    #[error("{origin}: truncated or corrupt BTF: {what}")]
    Corrupt { origin: String, what: String },
    #[error("{origin}: unknown BTF kind {kind} at type id {id}; cannot size it to read on")]
    UnknownKind { origin: String, kind: u32, id: u32 },
    #[error("no struct or union named `{type_name}` (in {origin})")]
    NoSuchType { type_name: String, origin: String },
    #[error("struct {type_name} has no member `{member}` (in {origin})")]
    NoSuchMember {
        type_name: String,
        member: String,
        origin: String,
    },
    #[error("`{type_name}.{path}`: member `{member}` is a {kind}, not an embedded struct/union; paths follow embedded members, not pointers (in {origin})")]
    NotEmbedded {
        type_name: String,
        path: String,
        member: String,
        kind: &'static str,
        origin: String,
    },
    #[error("`{type_name}.{path}`: `{member}` is a bitfield ({bits} bits at bit offset {bit_offset}), not readable as whole bytes (in {origin})")]
    Bitfield {
        type_name: String,
        path: String,
        member: String,
        bits: u32,
        bit_offset: u32,
        origin: String,
    },
    #[error("ambiguous: structs named `{type_name}` place `{path}` at different offsets {offsets:?} (in {origin})")]
    Ambiguous {
        type_name: String,
        path: String,
        offsets: Vec<u32>,
        origin: String,
    },
}

/// Raw BTF, kept as bytes with an index of where each type starts.
pub struct Btf {
    origin: String,
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Start of type id `i` in `types` is `starts[i - 1]` (ids start at 1; 0 is void).
    starts: Vec<usize>,
    /// Struct and union ids by name; one name can have several (driver-local copies).
    structs: HashMap<String, Vec<u32>>,
}

// By hand: the derived form would print megabytes of type data.
impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (origin, types) = (&self.origin, self.starts.len());
        write!(f, "Btf {{ origin: {origin:?}, types: {types} }}")
    }
}

/// A decoded btf_type header.
#[derive(Clone, Copy)]
struct Ty {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    /// Offset in `types` of the kind-specific data following the header.
    data: usize,
}

/// Why one candidate struct failed to resolve a path; turned into a BtfError by the caller.
enum Miss {
    Member(String),
    Err(BtfError),
}

fn kind_name(kind: u32) -> &'static str {
    "void,int,pointer,array,struct,union,enum,forward declaration,typedef,volatile,const,\
     restrict,function,function prototype,variable,data section,float,declaration tag,\
     type tag,enum64"
        .split(',')
        .nth(kind as usize)
        .unwrap_or("unknown kind")
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(SYS_FS_VMLINUX)
    }

    /// Reads raw BTF from a file (e.g. a `.BTF` section dumped from another kernel).
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_string(),
            source,
        })?;
        Self::parse_from(&bytes, path)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::parse_from(bytes, "in-memory BTF")
    }

    fn parse_from(bytes: &[u8], origin: &str) -> Result<Self, BtfError> {
        let corrupt = |what: String| BtfError::Corrupt {
            origin: origin.to_string(),
            what,
        };
        let magic = bytes
            .get(..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| corrupt(format!("{} bytes, no header", bytes.len())))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic {
                origin: origin.to_string(),
                magic,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "header needs {HEADER_LEN} bytes, have {}",
                bytes.len()
            )));
        }
        let h = |i: usize| u32_at(bytes, 4 + 4 * i).unwrap_or(0) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) = (h(0), h(1), h(2), h(3), h(4));
        // Section offsets count from the end of the header, whose length may grow.
        let section = |name: &str, off: usize, len: usize| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if hdr_len >= HEADER_LEN && e <= bytes.len() => Ok(&bytes[s..e]),
                _ => Err(corrupt(format!(
                    "{name} section {off}+{len} after a {hdr_len}-byte header exceeds {} bytes",
                    bytes.len()
                ))),
            }
        };
        let types = section("type", type_off, type_len)?.to_vec();
        let strings = section("string", str_off, str_len)?.to_vec();

        let mut btf = Btf {
            origin: origin.to_string(),
            types,
            strings,
            starts: Vec::new(),
            structs: HashMap::new(),
        };
        let mut pos = 0;
        while pos < btf.types.len() {
            let id = btf.starts.len() as u32 + 1;
            let ty = btf
                .header_at(pos)
                .ok_or_else(|| corrupt(format!("type id {id} header cut off")))?;
            let extra = match ty.kind {
                1 | 14 | 17 => 4,                // INT, VAR, DECL_TAG
                3 => 12,                         // ARRAY
                4 | 5 | 15 | 19 => 12 * ty.vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * ty.vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                kind => {
                    return Err(BtfError::UnknownKind {
                        origin: origin.to_string(),
                        kind,
                        id,
                    })
                }
            };
            if ty.data + extra > btf.types.len() {
                return Err(corrupt(format!(
                    "type id {id} (kind {}) data cut off",
                    ty.kind
                )));
            }
            if matches!(ty.kind, KIND_STRUCT | KIND_UNION) && ty.name_off != 0 {
                let name = btf.name(ty.name_off)?.to_string();
                btf.structs.entry(name).or_default().push(id);
            }
            btf.starts.push(pos);
            pos = ty.data + extra;
        }
        Ok(btf)
    }

    /// The id of the function `name` (`bpf_lsm_file_open`), or of the typedef `name`
    /// (`btf_trace_sched_process_exec`): what a BPF LSM or `tp_btf` program names as
    /// its attach point.
    pub fn attach_id(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.ty(id).is_some_and(|t| {
                matches!(t.kind, KIND_FUNC | KIND_TYPEDEF)
                    && t.name_off != 0
                    && self.name(t.name_off).is_ok_and(|n| n == name)
            })
        })
    }

    fn header_at(&self, pos: usize) -> Option<Ty> {
        let info = u32_at(&self.types, pos + 4)?;
        Some(Ty {
            name_off: u32_at(&self.types, pos)?,
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: u32_at(&self.types, pos + 8)?,
            data: pos + TYPE_LEN,
        })
    }

    fn ty(&self, id: u32) -> Option<Ty> {
        let pos = *self.starts.get((id as usize).checked_sub(1)?)?;
        self.header_at(pos)
    }

    fn name(&self, off: u32) -> Result<&str, BtfError> {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0);
        end.and_then(|e| std::str::from_utf8(&tail[..e]).ok())
            .ok_or_else(|| BtfError::Corrupt {
                origin: self.origin.clone(),
                what: format!("string at offset {off} missing, unterminated or not UTF-8"),
            })
    }

    /// Follows typedefs and qualifiers, which add no storage of their own.
    fn strip(&self, mut id: u32) -> Option<(u32, Ty)> {
        for _ in 0..64 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some((id, ty)),
            }
        }
        None
    }

    /// Finds `member` in struct/union `id`, descending into anonymous members (C keeps
    /// names unique across that nesting). Returns (bit offset, bitfield size, type id).
    fn find(&self, id: u32, member: &str, depth: u32) -> Result<Option<(u32, u32, u32)>, BtfError> {
        let Some(ty) = self
            .ty(id)
            .filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
        else {
            return Ok(None);
        };
        for i in 0..ty.vlen {
            let m = ty.data + 12 * i;
            let (name_off, mtype, raw) = (
                u32_at(&self.types, m).unwrap_or(0),
                u32_at(&self.types, m + 4).unwrap_or(0),
                u32_at(&self.types, m + 8).unwrap_or(0),
            );
            // With kind_flag, the offset word packs bitfield_size << 24 | bit_offset.
            let (mut bit_off, mut bits) = if ty.kind_flag {
                (raw & 0xff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if name_off == 0 {
                if depth < 32 {
                    if let Some((o, b, t)) =
                        self.find(self.strip(mtype).map_or(0, |s| s.0), member, depth + 1)?
                    {
                        return Ok(Some((bit_off + o, b, t)));
                    }
                }
            } else if self.name(name_off)? == member {
                // Old-style bitfields (no kind_flag) are encoded in the INT type itself.
                if let Some((_, it)) = self.strip(mtype).filter(|(_, t)| t.kind == KIND_INT) {
                    let enc = u32_at(&self.types, it.data).unwrap_or(0);
                    if enc & 0xff != it.size_or_type * 8 || (enc >> 16) & 0xff != 0 {
                        (bits, bit_off) = (enc & 0xff, bit_off + ((enc >> 16) & 0xff));
                    }
                }
                return Ok(Some((bit_off, bits, mtype)));
            }
        }
        Ok(None)
    }

    /// Resolves a dotted path in one candidate struct.
    fn resolve(&self, id: u32, type_name: &str, path: &str) -> Result<u32, Miss> {
        let (mut cur, mut total) = (id, 0u32);
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (bit_off, bits, mtype) = self
                .find(cur, part, 0)
                .map_err(Miss::Err)?
                .ok_or_else(|| Miss::Member(part.to_string()))?;
            if bit_off % 8 != 0 || bits % 8 != 0 {
                return Err(Miss::Err(BtfError::Bitfield {
                    type_name: type_name.into(),
                    path: path.into(),
                    member: part.to_string(),
                    bits,
                    bit_offset: bit_off,
                    origin: self.origin.clone(),
                }));
            }
            total += bit_off / 8;
            if i + 1 < parts.len() {
                match self.strip(mtype) {
                    Some((next, ty)) if matches!(ty.kind, KIND_STRUCT | KIND_UNION) => cur = next,
                    other => {
                        return Err(Miss::Err(BtfError::NotEmbedded {
                            type_name: type_name.into(),
                            path: path.into(),
                            member: part.to_string(),
                            kind: kind_name(other.map_or(0, |(_, t)| t.kind)),
                            origin: self.origin.clone(),
                        }))
                    }
                }
            }
        }
        Ok(total)
    }

    /// Byte offset of `member` within struct/union `type_name`, searching anonymous
    /// struct/union members recursively (e.g. `mm_struct.arg_start`). Errors if no such
    /// struct or member, if same-named structs disagree on the offset, or if the member
    /// is a bitfield not made of whole bytes at a byte boundary.
    pub fn member_offset(&self, type_name: &str, member: &str) -> Result<u32, BtfError> {
        self.member_path_offset(type_name, member)
    }

    /// Byte offset of a dotted path of embedded members, e.g. `file` + `f_path.dentry`.
    pub fn member_path_offset(&self, type_name: &str, path: &str) -> Result<u32, BtfError> {
        let candidates = self
            .structs
            .get(type_name)
            .ok_or_else(|| BtfError::NoSuchType {
                type_name: type_name.into(),
                origin: self.origin.clone(),
            })?;
        // Several structs may share a name (driver-local definitions). Those lacking
        // the path are other structs; those having it must agree, or we cannot know
        // which one the kernel code we hook uses.
        let mut found = Vec::new();
        let mut missing = None;
        for &id in candidates {
            match self.resolve(id, type_name, path) {
                Ok(off) => found.push(off),
                Err(Miss::Member(m)) => missing = Some(m),
                Err(Miss::Err(e)) => return Err(e),
            }
        }
        found.sort_unstable();
        found.dedup();
        match found.as_slice() {
            [off] => Ok(*off),
            [] => Err(BtfError::NoSuchMember {
                type_name: type_name.into(),
                member: missing.unwrap_or_else(|| path.into()),
                origin: self.origin.clone(),
            }),
            _ => Err(BtfError::Ambiguous {
                type_name: type_name.into(),
                path: path.into(),
                offsets: found,
                origin: self.origin.clone(),
            }),
        }
    }
}

/// The offsets the kernel programs read, from this BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        sb_s_dev: btf.member_offset("super_block", "s_dev")?,
        bprm_file: btf.member_offset("linux_binprm", "file")?,
        bprm_filename: btf.member_offset("linux_binprm", "filename")?,
        file_f_flags: btf.member_offset("file", "f_flags")?,
        file_f_path: btf.member_offset("file", "f_path")?,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        socket_type: btf.member_offset("socket", "type")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        msghdr_msg_name: btf.member_offset("msghdr", "msg_name")?,
        msghdr_msg_namelen: btf.member_offset("msghdr", "msg_namelen")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_d_inode: btf.member_offset("dentry", "d_inode")?,
        dentry_d_name_name: btf.member_path_offset("dentry", "d_name.name")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        vfsmount_mnt_sb: btf.member_offset("vfsmount", "mnt_sb")?,
        inode_i_generation: btf.member_offset("inode", "i_generation")?,
        task_signal: btf.member_offset("task_struct", "signal")?,
        signal_live: btf.member_offset("signal_struct", "live")?,
        task_cred: btf.member_offset("task_struct", "cred")?,
        cred_user_ns: btf.member_offset("cred", "user_ns")?,
        user_ns_level: btf.member_offset("user_namespace", "level")?,
        sb_s_magic: btf.member_offset("super_block", "s_magic")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        mm_owner: btf
            .member_offset("mm_struct", "owner")
            .unwrap_or(openclaw_guard_common::OFFSET_ABSENT),
        unix_sock_path: btf.member_offset("unix_sock", "path")?,
        unix_sock_peer: btf.member_offset("unix_sock", "peer")?,
        unix_sock_addr: btf.member_offset("unix_sock", "addr")?,
        unix_address_name: btf.member_offset("unix_address", "name")?,
        sock_family: btf.member_path_offset("sock", "__sk_common.skc_family")?,
        inode_i_mode: btf.member_offset("inode", "i_mode")?,
        sock_sk_peer_pid: btf.member_offset("sock", "sk_peer_pid")?,
        pid_numbers: btf.member_offset("pid", "numbers")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds raw little-endian BTF by hand; ids are handed out in call order from 1.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(
            &mut self,
            name: &str,
            kind: u32,
            kflag: bool,
            vlen: u32,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let info = (kflag as u32) << 31 | kind << 24 | vlen;
            for w in [self.s(name), info, st].iter().chain(extra) {
                self.types.extend(w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.ty(name, KIND_INT, false, 0, size, &[size * 8])
        }
        fn record(
            &mut self,
            kind: u32,
            name: &str,
            kflag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(n, t, o) in members {
                extra.extend([self.s(n), t, o]);
            }
            self.ty(name, kind, kflag, members.len() as u32, size, &extra)
        }
        fn bytes(&self) -> Vec<u8> {
            let tl = self.types.len() as u32;
            let sl = self.strings.len() as u32;
            let mut out = vec![0x9f, 0xeb, 1, 0];
            for w in [24, 0, tl, tl, sl] {
                out.extend(u32::to_le_bytes(w));
            }
            out.extend(&self.types);
            out.extend(&self.strings);
            out
        }
    }

    /// A blob with every kind (so sizing is exercised) and the layouts the tests probe.
    fn sample() -> Builder {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let long = b.int("long", 8); // 2
        let ptr = b.ty("", 2, false, 0, int, &[]); // 3
        b.ty("arr", 3, false, 0, 0, &[int, int, 4]);
        b.ty("e", 6, false, 2, 4, &[b.strings.len() as u32, 0, 0, 1]);
        b.ty("", 7, false, 0, 0, &[]);
        b.ty("fp", 13, false, 1, int, &[0, int]);
        b.ty("f", 12, false, 0, 7, &[]);
        b.ty("v", 14, false, 0, int, &[1]);
        b.ty(".data", 15, false, 1, 8, &[9, 0, 4]);
        b.ty("float", 16, false, 0, 8, &[]);
        b.ty("tag", 17, false, 0, int, &[u32::MAX]);
        b.ty("tt", 18, false, 0, int, &[]);
        b.ty("e64", 19, false, 1, 8, &[0, 1, 0]);
        let anon_s = b.record(
            KIND_STRUCT,
            "",
            false,
            16,
            &[("a_inner", int, 0), ("b_inner", long, 64)],
        );
        let anon_u = b.record(
            KIND_UNION,
            "",
            false,
            16,
            &[("", anon_s, 0), ("u_alt", long, 0)],
        );
        let anon_c = b.ty("", KIND_CONST, false, 0, anon_u, &[]);
        let inner = b.record(
            KIND_STRUCT,
            "inner",
            false,
            8,
            &[("x", int, 0), ("y", int, 32)],
        );
        let inner_t = b.ty("inner_t", KIND_TYPEDEF, false, 0, inner, &[]);
        b.record(
            KIND_STRUCT,
            "outer",
            true,
            48,
            &[
                ("first", int, 0),
                ("", anon_c, 64),
                ("in", inner_t, 192),
                ("ptr", ptr, 256),
                ("bf", int, 3 << 24 | 289),
                ("bbyte", int, 8 << 24 | 296),
                ("last", long, 320),
            ],
        );
        b.record(KIND_STRUCT, "dup", false, 4, &[("a", int, 0)]);
        b.record(KIND_STRUCT, "dup", false, 8, &[("a", int, 32)]);
        b.record(KIND_STRUCT, "dup", false, 4, &[("b", int, 0)]);
        b.record(KIND_UNION, "same", false, 4, &[("a", int, 0)]);
        b.record(KIND_STRUCT, "same", false, 4, &[("a", int, 0)]);
        b
    }

    #[test]
    fn btf_blob_offsets() {
        let btf = Btf::parse(&sample().bytes()).unwrap();
        let off = |t: &str, p: &str| btf.member_path_offset(t, p);
        assert_eq!(off("outer", "first").unwrap(), 0);
        // anonymous const union at 8 -> anonymous struct at 0 -> member
        assert_eq!(off("outer", "a_inner").unwrap(), 8);
        assert_eq!(off("outer", "b_inner").unwrap(), 16);
        assert_eq!(off("outer", "u_alt").unwrap(), 8);
        assert_eq!(off("outer", "in").unwrap(), 24);
        assert_eq!(
            off("outer", "in.y").unwrap(),
            28,
            "path through a typedef'd struct"
        );
        assert_eq!(
            off("outer", "bbyte").unwrap(),
            37,
            "whole-byte bitfield is readable"
        );
        assert_eq!(btf.member_offset("outer", "last").unwrap(), 40);
        assert_eq!(off("dup", "b").unwrap(), 0, "only one `dup` has `b`");
        assert_eq!(off("same", "a").unwrap(), 0, "agreeing duplicates are fine");
    }

    #[test]
    fn btf_blob_lookup_errors() {
        let btf = Btf::parse(&sample().bytes()).unwrap();
        let err = |t: &str, p: &str| btf.member_path_offset(t, p).unwrap_err();
        let e = err("outer", "nope");
        assert!(matches!(e, BtfError::NoSuchMember { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "struct outer has no member `nope` (in in-memory BTF)"
        );
        let e = err("outer", "in.nope");
        assert!(
            matches!(&e, BtfError::NoSuchMember { member, .. } if member == "nope"),
            "{e}"
        );
        assert!(matches!(err("missing", "a"), BtfError::NoSuchType { .. }));
        let e = err("outer", "ptr.x");
        assert!(
            matches!(
                e,
                BtfError::NotEmbedded {
                    kind: "pointer",
                    ..
                }
            ),
            "{e}"
        );
        let e = err("outer", "bf");
        assert!(
            matches!(
                e,
                BtfError::Bitfield {
                    bits: 3,
                    bit_offset: 289,
                    ..
                }
            ),
            "{e}"
        );
        let e = err("dup", "a");
        assert!(
            matches!(&e, BtfError::Ambiguous { offsets, .. } if offsets == &[0, 4]),
            "{e}"
        );
    }

    #[test]
    fn btf_blob_malformed() {
        let good = sample().bytes();
        // Every cut either fails cleanly or (past the declared sections) still parses.
        for len in 0..good.len() {
            assert!(
                Btf::parse(&good[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        let e = Btf::parse(&swapped).unwrap_err();
        assert!(matches!(e, BtfError::BadMagic { magic: 0x9feb, .. }), "{e}");
        // A type section that ends inside a type's member list.
        let mut cut = good.clone();
        let tl = u32_at(&cut, 12).unwrap() - 4;
        cut[12..16].copy_from_slice(&tl.to_le_bytes());
        let e = Btf::parse(&cut).unwrap_err();
        assert!(
            matches!(e, BtfError::Corrupt { .. }) && e.to_string().contains("type id"),
            "{e}"
        );
        // A kind newer than ENUM64.
        let mut b = sample();
        let id = b.ty("future", 20, false, 0, 0, &[]);
        let e = Btf::parse(&b.bytes()).unwrap_err();
        assert!(
            matches!(e, BtfError::UnknownKind { kind: 20, id: i, .. } if i == id),
            "{e}"
        );
    }

    #[test]
    fn btf_host_kernel_offsets() {
        let btf = Btf::from_sys_fs().unwrap();
        let k = kernel_offsets(&btf).unwrap();
        eprintln!("host {k:?}");
        assert!(k.task_tgid < k.task_real_parent, "{k:?}");
        assert_eq!(k.task_real_parent % 8, 0);
        assert!(
            k.bprm_file < k.bprm_filename && k.file_f_inode % 8 == 0,
            "{k:?}"
        );
        let arg_start = btf.member_offset("mm_struct", "arg_start").unwrap();
        let sk_protocol = btf.member_offset("sock", "sk_protocol").unwrap();
        eprintln!("host mm_struct.arg_start={arg_start} sock.sk_protocol={sk_protocol}");
        let f_path = btf.member_offset("file", "f_path").unwrap();
        let dentry = btf.member_offset("path", "dentry").unwrap();
        assert_eq!(
            btf.member_path_offset("file", "f_path.dentry").unwrap(),
            f_path + dentry
        );
        // A one-bit flag: a byte read would pick up its neighbours.
        let e = btf
            .member_offset("task_struct", "sched_reset_on_fork")
            .unwrap_err();
        assert!(matches!(e, BtfError::Bitfield { bits: 1, .. }), "{e}");
        let e = btf.member_offset("task_struct", "tgidx").unwrap_err();
        assert_eq!(
            e.to_string(),
            "struct task_struct has no member `tgidx` (in /sys/kernel/btf/vmlinux)"
        );
    }

    /// Offset of `member` as printed by pahole (`/* offset size */`), if pahole runs.
    fn pahole(file: &str, ty: &str, member: &str) -> Option<u32> {
        let out = std::process::Command::new("pahole")
            .args(["-F", "btf", "-C", ty, file])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (decl, comment) = l.split_once("/*")?;
            let name = decl
                .trim_end()
                .strip_suffix(';')?
                .rsplit([' ', '\t', '*'])
                .next()?;
            (name == member).then(|| comment.split_whitespace().next()?.parse().ok())?
        })
    }

    /// Independent cross-check against pahole (Debian package `dwarves`) when installed.
    #[test]
    fn btf_host_matches_pahole() {
        let btf = Btf::from_sys_fs().unwrap();
        let probes = [
            ("task_struct", "tgid"),
            ("task_struct", "real_parent"),
            ("file", "f_inode"),
            ("file", "f_flags"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("inode", "i_generation"),
            ("super_block", "s_dev"),
            ("linux_binprm", "file"),
            ("linux_binprm", "filename"),
            ("mm_struct", "arg_start"),
            ("sock", "sk_protocol"),
        ];
        for (ty, m) in probes {
            let Some(expected) = pahole(SYS_FS_VMLINUX, ty, m) else {
                eprintln!(
                    "pahole not available or no `{ty}.{m}` in its output: cross-check skipped"
                );
                return;
            };
            assert_eq!(btf.member_offset(ty, m).unwrap(), expected, "{ty}.{m}");
        }
    }

    /// Debian kernels' BTF, dumped from the vmlinuz images (decompress the payload, then
    /// `objcopy --dump-section .BTF=btf-6.1 vmlinux`). Run with `-- --ignored` and
    /// OPENCLAW_GUARD_BTF_6_1 / OPENCLAW_GUARD_BTF_6_12 set to those files.
    #[test]
    #[ignore = "needs Debian kernel BTF files"]
    fn btf_debian_kernels() {
        let cases = [
            ("OPENCLAW_GUARD_BTF_6_1", [2420, 2432, 32, 16, 64, 312, 516]),
            (
                "OPENCLAW_GUARD_BTF_6_12",
                [2436, 2448, 40, 64, 48, 376, 574],
            ),
        ];
        for (var, want) in cases {
            let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} not set"));
            let btf = Btf::from_file(&path).unwrap();
            let got = [
                btf.member_offset("task_struct", "tgid").unwrap(),
                btf.member_offset("task_struct", "real_parent").unwrap(),
                btf.member_offset("file", "f_inode").unwrap(),
                btf.member_offset("file", "f_path").unwrap(),
                btf.member_offset("file", "f_flags").unwrap(),
                btf.member_offset("mm_struct", "arg_start").unwrap(),
                btf.member_offset("sock", "sk_protocol").unwrap(),
            ];
            assert_eq!(got, want, "{path}");
            eprintln!("{path}: {:?}", kernel_offsets(&btf).unwrap());
        }
    }
}
