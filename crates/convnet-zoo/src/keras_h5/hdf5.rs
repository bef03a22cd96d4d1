//! A small, read-only HDF5 reader over a byte slice, written against the
//! HDF5 file format specification (version 3.0), covering what Keras's
//! legacy weight files use:
//!
//! - superblock versions 0, 1, 2 and 3;
//! - object headers version 1 and 2 ("OHDR"), with continuation blocks;
//! - groups as symbol tables (v1 B-tree, "SNOD" nodes, local heap) and as
//!   links (link messages; dense storage in a fractal heap indexed by a v2
//!   B-tree);
//! - attributes (message versions 1, 2 and 3, compact or dense);
//! - datatypes: fixed-length and variable-length strings (global heap),
//!   IEEE floats of 2, 4 and 8 bytes in either byte order;
//! - dataspaces version 1 and 2;
//! - data layouts version 3 and 4: compact, contiguous, and chunked without
//!   filters (v1 B-tree chunk index).
//!
//! Every length and address read from the file is checked against the bytes
//! there before use; nothing is allocated beyond what those bytes hold, and
//! no input makes the reader panic: each failure is an [`H5Error`] naming the
//! part of the file at fault.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::H5Error;

/// The "undefined address" (all bits set), after widening to 64 bits.
pub(crate) const UNDEF: u64 = u64::MAX;

/// The HDF5 signature, at offset 0, 512, 1024, 2048, ... of a file.
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Most nodes, blocks or headers visited while reading one file: a bound
/// on the work a malformed file (a cycle of pointers) can cause.
/// (Keras's InceptionV3 file takes about 10 per weight, some 6,000.)
const MAX_VISITS: usize = 200_000;

pub(crate) fn malformed(part: impl Into<String>, detail: impl Into<String>) -> H5Error {
    H5Error::Malformed {
        part: part.into(),
        detail: detail.into(),
    }
}

pub(crate) fn unsupported(part: impl Into<String>, detail: impl Into<String>) -> H5Error {
    H5Error::Unsupported {
        part: part.into(),
        detail: detail.into(),
    }
}

/// A bounds-checked reader over a slice of the file, naming the part of the
/// file it reads in its errors.
#[derive(Clone)]
pub(crate) struct Cursor<'a, 'p> {
    buf: &'a [u8],
    pos: usize,
    part: &'p str,
    so: usize,
    sl: usize,
}

impl<'a, 'p> Cursor<'a, 'p> {
    fn new(buf: &'a [u8], part: &'p str, so: usize, sl: usize) -> Self {
        Cursor {
            buf,
            pos: 0,
            part,
            so,
            sl,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], H5Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(malformed(
                self.part,
                format!(
                    "needs {n} bytes at offset {} but only {} remain",
                    self.pos,
                    self.remaining()
                ),
            )),
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), H5Error> {
        self.bytes(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, H5Error> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, H5Error> {
        Ok(self.uvar(2)? as u16)
    }

    fn u32(&mut self) -> Result<u32, H5Error> {
        Ok(self.uvar(4)? as u32)
    }

    /// A little-endian unsigned integer of `n` bytes (0 to 8).
    fn uvar(&mut self, n: usize) -> Result<u64, H5Error> {
        if n > 8 {
            return Err(malformed(self.part, format!("a {n}-byte integer")));
        }
        let b = self.bytes(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A file address ("size of offsets" bytes); all bits set is [`UNDEF`].
    fn addr(&mut self) -> Result<u64, H5Error> {
        let n = self.so;
        let v = self.uvar(n)?;
        if n < 8 && v == (1u64 << (8 * n)) - 1 {
            return Ok(UNDEF);
        }
        Ok(v)
    }

    /// A length ("size of lengths" bytes).
    fn len(&mut self) -> Result<u64, H5Error> {
        let n = self.sl;
        self.uvar(n)
    }

    fn signature(&mut self, sig: &[u8; 4]) -> Result<(), H5Error> {
        let got = self.bytes(4)?;
        if got != sig {
            return Err(malformed(
                self.part,
                format!(
                    "expected the signature \"{}\", found {:?}",
                    String::from_utf8_lossy(sig),
                    String::from_utf8_lossy(got)
                ),
            ));
        }
        Ok(())
    }
}

fn to_usize(v: u64, part: &str, what: &str) -> Result<usize, H5Error> {
    usize::try_from(v).map_err(|_| malformed(part, format!("{what} {v} is too large")))
}

/// Bytes needed to encode `n` (HDF5's `H5VM_limit_enc_size`).
fn limit_enc_size(n: u64) -> usize {
    let log2 = if n == 0 {
        0
    } else {
        63 - n.leading_zeros() as usize
    };
    log2 / 8 + 1
}

/// One message of an object header.
#[derive(Clone, Copy)]
pub(crate) struct Message<'a> {
    pub mtype: u16,
    pub flags: u8,
    pub data: &'a [u8],
}

/// An element type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Datatype {
    /// IEEE float of `size` bytes (2, 4 or 8).
    Float { size: usize, big_endian: bool },
    /// Integer of `size` bytes.
    Int {
        size: usize,
        signed: bool,
        big_endian: bool,
    },
    /// Fixed-length string of `size` bytes; `space_pad` when padded with
    /// spaces (else NUL-terminated or NUL-padded).
    FixedString { size: usize, space_pad: bool },
    /// Variable-length string (or sequence of bytes) in the global heap;
    /// each element takes `size` bytes in the data (length, heap ID).
    VarString { size: usize },
    /// Anything else: its class number and size.
    Other { class: u8, size: usize },
}

impl Datatype {
    pub fn size(&self) -> usize {
        match *self {
            Datatype::Float { size, .. }
            | Datatype::Int { size, .. }
            | Datatype::FixedString { size, .. }
            | Datatype::VarString { size }
            | Datatype::Other { size, .. } => size,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Datatype::Float { size, big_endian } => format!(
                "{}-bit float{}",
                size * 8,
                if *big_endian { " (big-endian)" } else { "" }
            ),
            Datatype::Int { size, signed, .. } => {
                format!("{}{}", if *signed { "int" } else { "uint" }, size * 8)
            }
            Datatype::FixedString { size, .. } => format!("{size}-byte string"),
            Datatype::VarString { .. } => "variable-length string".into(),
            Datatype::Other { class, .. } => format!(
                "{} (class {class})",
                match class {
                    2 => "time",
                    4 => "bitfield",
                    5 => "opaque",
                    6 => "compound",
                    7 => "reference",
                    8 => "enumerated",
                    9 => "variable-length sequence",
                    10 => "array",
                    _ => "unknown type",
                }
            ),
        }
    }
}

/// An attribute: its name, element type, element count and raw data.
pub(crate) struct Attribute<'a> {
    pub name: String,
    pub dtype: Datatype,
    pub count: usize,
    pub data: &'a [u8],
}

/// Where a group keeps its links.
enum Links {
    /// Symbol table: v1 B-tree and local heap addresses.
    SymbolTable { btree: u64, heap: u64 },
    /// Link messages in the header, or (`dense`) a fractal heap and the
    /// name-index v2 B-tree.
    Messages { dense: Option<(u64, u64)> },
}

/// The objects of a global heap collection: index -> (file offset, length).
type GlobalHeap = HashMap<u16, (usize, usize)>;

/// An opened HDF5 file.
pub(crate) struct File<'a> {
    data: &'a [u8],
    base: u64,
    so: usize,
    sl: usize,
    root: u64,
    visits: RefCell<usize>,
    gcol_cache: RefCell<HashMap<u64, GlobalHeap>>,
}

impl<'a> File<'a> {
    /// Opens the file: finds and reads the superblock.
    pub fn open(data: &'a [u8]) -> Result<Self, H5Error> {
        let part = "superblock";
        let mut at = 0usize;
        let start = loop {
            match data.get(at..at.saturating_add(8)) {
                Some(s) if s == SIGNATURE => break at,
                Some(_) => {}
                None => {
                    return Err(H5Error::NotHdf5(if data.len() < 8 {
                        format!("{} bytes, too short for the HDF5 signature", data.len())
                    } else {
                        "no HDF5 signature at offset 0, 512, 1024, 2048, ...".into()
                    }))
                }
            }
            at = if at == 0 { 512 } else { at * 2 };
        };
        let mut c = Cursor::new(&data[start..], part, 8, 8);
        c.skip(8)?;
        let version = c.u8()?;
        let (so, sl, base, eof, root);
        match version {
            0 | 1 => {
                c.skip(3)?; // free-space, root symbol table entry, reserved
                c.skip(1)?; // shared header message format version
                so = usize::from(c.u8()?);
                sl = usize::from(c.u8()?);
                check_sizes(so, sl)?;
                c.skip(1)?; // reserved
                c.skip(4)?; // group leaf and internal node K
                c.skip(4)?; // file consistency flags
                if version == 1 {
                    c.skip(4)?; // indexed storage internal node K, reserved
                }
                c.so = so;
                c.sl = sl;
                base = c.addr()?;
                c.addr()?; // free-space info (reserved)
                eof = c.addr()?;
                c.addr()?; // driver information block
                           // Root group symbol table entry.
                c.addr()?; // link name offset
                root = c.addr()?;
            }
            2 | 3 => {
                so = usize::from(c.u8()?);
                sl = usize::from(c.u8()?);
                check_sizes(so, sl)?;
                c.skip(1)?; // file consistency flags
                c.so = so;
                c.sl = sl;
                base = c.addr()?;
                c.addr()?; // superblock extension
                eof = c.addr()?;
                root = c.addr()?;
                let end = c.pos;
                verify_checksum(&c.buf[..end], c.u32()?, part)?;
            }
            v => {
                return Err(unsupported(
                    part,
                    format!("superblock version {v} (known: 0 to 3)"),
                ))
            }
        }
        if base == UNDEF || base > data.len() as u64 {
            return Err(malformed(
                part,
                format!("base address {base} is past the end of the file"),
            ));
        }
        // The end-of-file address counts the user block (HDF5 writes the
        // base address plus the relative end).
        if eof != UNDEF && eof > data.len() as u64 {
            return Err(malformed(
                part,
                format!(
                    "the file should be {eof} bytes long but has {}: truncated",
                    data.len()
                ),
            ));
        }
        if root == UNDEF {
            return Err(malformed(part, "no root group address"));
        }
        Ok(File {
            data,
            base,
            so,
            sl,
            root,
            visits: RefCell::new(0),
            gcol_cache: RefCell::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// Counts one more node or block visited; errors past [`MAX_VISITS`].
    fn visit(&self, part: &str) -> Result<(), H5Error> {
        let mut v = self.visits.borrow_mut();
        *v += 1;
        if *v > MAX_VISITS {
            return Err(malformed(
                part,
                format!("more than {MAX_VISITS} nodes visited: a cycle of pointers?"),
            ));
        }
        Ok(())
    }

    /// The file's bytes from address `addr` on.
    fn slice_from(&self, addr: u64, part: &str) -> Result<&'a [u8], H5Error> {
        let abs = self
            .base
            .checked_add(addr)
            .filter(|&a| addr != UNDEF && a < self.data.len() as u64)
            .ok_or_else(|| {
                malformed(
                    part,
                    if addr == UNDEF {
                        "the address is undefined".to_string()
                    } else {
                        format!(
                            "address {addr} is past the end of the file ({} bytes)",
                            self.data.len()
                        )
                    },
                )
            })?;
        Ok(&self.data[abs as usize..])
    }

    /// `len` bytes of the file at address `addr`.
    pub fn slice(&self, addr: u64, len: u64, part: &str) -> Result<&'a [u8], H5Error> {
        if len == 0 {
            return Ok(&[]);
        }
        let s = self.slice_from(addr, part)?;
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| n <= s.len())
            .ok_or_else(|| {
                malformed(
                    part,
                    format!(
                        "{len} bytes at address {addr} run past the end of the file ({} bytes)",
                        self.data.len()
                    ),
                )
            })?;
        Ok(&s[..n])
    }

    fn cursor<'p>(&self, buf: &'a [u8], part: &'p str) -> Cursor<'a, 'p> {
        Cursor::new(buf, part, self.so, self.sl)
    }

    fn cursor_at<'p>(&self, addr: u64, part: &'p str) -> Result<Cursor<'a, 'p>, H5Error> {
        let s = self.slice_from(addr, part)?;
        Ok(Cursor::new(s, part, self.so, self.sl))
    }

    // ---------------------------------------------------------------
    // Object headers

    /// The messages of the object header at `addr`, continuation blocks
    /// followed.
    pub fn messages(&self, addr: u64) -> Result<Vec<Message<'a>>, H5Error> {
        let part = format!("object header at address {addr}");
        self.visit(&part)?;
        let mut c = self.cursor_at(addr, &part)?;
        let mut out = Vec::new();
        // (block bytes, whether v2 messages) still to parse.
        let mut blocks: Vec<(&'a [u8], String)> = Vec::new();
        let v2;
        let mut creation_order = false;
        if c.buf.get(..4) == Some(b"OHDR") {
            c.skip(4)?;
            let version = c.u8()?;
            if version != 2 {
                return Err(unsupported(
                    &part,
                    format!("\"OHDR\" object header version {version} (known: 2)"),
                ));
            }
            let flags = c.u8()?;
            if flags & 0x20 != 0 {
                c.skip(16)?; // times
            }
            if flags & 0x10 != 0 {
                c.skip(4)?; // attribute storage phase change values
            }
            creation_order = flags & 0x04 != 0;
            let size = c.uvar(1 << (flags & 3))?;
            let size = to_usize(size, &part, "chunk size")?;
            let chunk = c.bytes(size)?;
            let end = c.pos;
            verify_checksum(&c.buf[..end], c.u32()?, &part)?;
            blocks.push((chunk, part.clone()));
            v2 = true;
        } else {
            let version = c.u8()?;
            if version != 1 {
                return Err(unsupported(
                    &part,
                    format!("object header version {version} (known: 1, and 2 with \"OHDR\")"),
                ));
            }
            c.skip(1)?; // reserved
            c.u16()?; // number of messages (counted again below)
            c.u32()?; // reference count
            let size = to_usize(u64::from(c.u32()?), &part, "header size")?;
            c.skip(4)?; // padding to 8 bytes
            let chunk = c.bytes(size)?;
            blocks.push((chunk, part.clone()));
            v2 = false;
        }
        let mut seen = HashSet::new();
        seen.insert(addr);
        let mut i = 0;
        while i < blocks.len() {
            let (block, bpart) = blocks[i].clone();
            i += 1;
            let mut m = self.cursor(block, &bpart);
            let head = if v2 {
                4 + if creation_order { 2 } else { 0 }
            } else {
                8
            };
            while m.remaining() >= head {
                let (mtype, size, flags) = if v2 {
                    let t = u16::from(m.u8()?);
                    let s = m.u16()?;
                    let f = m.u8()?;
                    if creation_order {
                        m.skip(2)?;
                    }
                    (t, s, f)
                } else {
                    let t = m.u16()?;
                    let s = m.u16()?;
                    let f = m.u8()?;
                    m.skip(3)?;
                    (t, s, f)
                };
                let data = m.bytes(usize::from(size))?;
                if mtype == 0x10 {
                    // Continuation.
                    let mut cc = self.cursor(data, &bpart);
                    let off = cc.addr()?;
                    let len = cc.len()?;
                    if !seen.insert(off) {
                        return Err(malformed(
                            &bpart,
                            format!("continuation block at address {off} is read twice"),
                        ));
                    }
                    self.visit(&bpart)?;
                    let cpart = format!("continuation block at address {off} of {part}");
                    let blk = self.slice(off, len, &cpart)?;
                    let blk = if v2 {
                        let mut bc = self.cursor(blk, &cpart);
                        bc.signature(b"OCHK")?;
                        let body = blk.len().checked_sub(8).ok_or_else(|| {
                            malformed(&cpart, "too short for its signature and checksum")
                        })?;
                        let sum = &blk[4 + body..];
                        let sum = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
                        verify_checksum(&blk[..4 + body], sum, &cpart)?;
                        &blk[4..4 + body]
                    } else {
                        blk
                    };
                    blocks.push((blk, cpart));
                } else if mtype != 0 {
                    out.push(Message { mtype, flags, data });
                }
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------
    // Groups

    /// The object header address of the child `name` of the group whose
    /// header is at `group`; `None` when there is no such link.
    pub fn child(&self, group: u64, name: &str) -> Result<Option<u64>, H5Error> {
        Ok(self
            .links(group)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a))
    }

    /// Follows a `/`-separated path from the group at `start`.
    pub fn lookup(&self, start: u64, path: &str) -> Result<Option<u64>, H5Error> {
        let mut at = start;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            match self.child(at, comp)? {
                Some(a) => at = a,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// All hard links of the group whose object header is at `group`:
    /// (name, object header address).
    pub fn links(&self, group: u64) -> Result<Vec<(String, u64)>, H5Error> {
        let msgs = self.messages(group)?;
        let part = format!("group at address {group}");
        let mut kind = None;
        let mut out = Vec::new();
        for m in &msgs {
            match m.mtype {
                0x11 => {
                    let mut c = self.cursor(m.data, &part);
                    let btree = c.addr()?;
                    let heap = c.addr()?;
                    kind = Some(Links::SymbolTable { btree, heap });
                }
                0x02 => {
                    let mut c = self.cursor(m.data, &part);
                    let version = c.u8()?;
                    if version != 0 {
                        return Err(unsupported(
                            &part,
                            format!("link info message version {version}"),
                        ));
                    }
                    let flags = c.u8()?;
                    if flags & 1 != 0 {
                        c.skip(8)?;
                    }
                    let heap = c.addr()?;
                    let btree = c.addr()?;
                    let dense = if heap == UNDEF {
                        None
                    } else {
                        Some((heap, btree))
                    };
                    if !matches!(kind, Some(Links::SymbolTable { .. })) {
                        kind = Some(Links::Messages { dense });
                    }
                }
                0x06 => {
                    if kind.is_none() {
                        kind = Some(Links::Messages { dense: None });
                    }
                    if let Some(l) = self.parse_link(m.data, &part)? {
                        out.push(l);
                    }
                }
                _ => {}
            }
        }
        match kind {
            None => Err(malformed(
                &part,
                "not a group: no symbol table, link info or link message",
            )),
            Some(Links::SymbolTable { btree, heap }) => {
                out.clear();
                let hpart = format!("local heap at address {heap} of {part}");
                let mut c = self.cursor_at(heap, &hpart)?;
                c.signature(b"HEAP")?;
                let version = c.u8()?;
                if version != 0 {
                    return Err(unsupported(&hpart, format!("local heap version {version}")));
                }
                c.skip(3)?;
                let size = c.len()?;
                c.len()?; // free list head
                let data_addr = c.addr()?;
                let names = self.slice(data_addr, size, &hpart)?;
                let mut seen = HashSet::new();
                self.walk_group_btree(btree, None, names, &mut out, &mut seen)?;
                Ok(out)
            }
            Some(Links::Messages { dense: None }) => Ok(out),
            Some(Links::Messages {
                dense: Some((heap, btree)),
            }) => {
                let heap = FractalHeap::open(self, heap)?;
                let tree = BTree2::open(self, btree)?;
                if tree.rtype != 5 {
                    return Err(malformed(
                        &tree.part,
                        format!(
                            "record type {} for a link name index (expected 5)",
                            tree.rtype
                        ),
                    ));
                }
                for rec in tree.records(self)? {
                    let id = rec.get(4..).unwrap_or(&[]);
                    let obj = heap.object(self, id)?;
                    if let Some(l) = self.parse_link(obj, &heap.part)? {
                        out.push(l);
                    }
                }
                Ok(out)
            }
        }
    }

    /// A link message: `Some((name, address))` for a hard link, `None` for
    /// soft and external links.
    fn parse_link(&self, data: &'a [u8], part: &str) -> Result<Option<(String, u64)>, H5Error> {
        let part = format!("link message in {part}");
        let mut c = self.cursor(data, &part);
        let version = c.u8()?;
        if version != 1 {
            return Err(unsupported(
                &part,
                format!("link message version {version}"),
            ));
        }
        let flags = c.u8()?;
        let ltype = if flags & 0x08 != 0 { c.u8()? } else { 0 };
        if flags & 0x04 != 0 {
            c.skip(8)?;
        }
        if flags & 0x10 != 0 {
            c.skip(1)?;
        }
        let n = c.uvar(1 << (flags & 3))?;
        let n = to_usize(n, &part, "name length")?;
        let name = String::from_utf8_lossy(c.bytes(n)?).into_owned();
        if ltype != 0 {
            return Ok(None);
        }
        let addr = c.addr()?;
        Ok(Some((name, addr)))
    }

    /// Collects the entries of a symbol-table group's v1 B-tree.
    fn walk_group_btree(
        &self,
        addr: u64,
        level: Option<u8>,
        names: &[u8],
        out: &mut Vec<(String, u64)>,
        seen: &mut HashSet<u64>,
    ) -> Result<(), H5Error> {
        let part = format!("group B-tree node at address {addr}");
        if !seen.insert(addr) {
            return Err(malformed(&part, "node reached twice: a cycle"));
        }
        self.visit(&part)?;
        let mut c = self.cursor_at(addr, &part)?;
        c.signature(b"TREE")?;
        let ntype = c.u8()?;
        if ntype != 0 {
            return Err(malformed(
                &part,
                format!("node type {ntype} in a group B-tree"),
            ));
        }
        let node_level = c.u8()?;
        if let Some(l) = level {
            if node_level != l {
                return Err(malformed(
                    &part,
                    format!("level {node_level} where its parent says {l}"),
                ));
            }
        }
        let entries = usize::from(c.u16()?);
        c.addr()?; // left sibling
        c.addr()?; // right sibling
        let sl = c.sl;
        let mut children = Vec::new();
        for _ in 0..entries {
            c.skip(sl)?; // key
            children.push(c.addr()?);
        }
        for child in children {
            if node_level > 0 {
                self.walk_group_btree(child, Some(node_level - 1), names, out, seen)?;
            } else {
                self.read_snod(child, names, out)?;
            }
        }
        Ok(())
    }

    /// The entries of one symbol table node.
    fn read_snod(
        &self,
        addr: u64,
        names: &[u8],
        out: &mut Vec<(String, u64)>,
    ) -> Result<(), H5Error> {
        let part = format!("symbol table node at address {addr}");
        self.visit(&part)?;
        let mut c = self.cursor_at(addr, &part)?;
        c.signature(b"SNOD")?;
        let version = c.u8()?;
        if version != 1 {
            return Err(unsupported(&part, format!("version {version}")));
        }
        c.skip(1)?;
        let n = c.u16()?;
        for _ in 0..n {
            let name_off = c.len_as_offset()?;
            let obj = c.addr()?;
            c.skip(4 + 4 + 16)?; // cache type, reserved, scratch pad
            let start = usize::try_from(name_off)
                .ok()
                .filter(|&s| s < names.len())
                .ok_or_else(|| {
                    malformed(
                        &part,
                        format!(
                            "link name offset {name_off} is past the local heap ({} bytes)",
                            names.len()
                        ),
                    )
                })?;
            let rest = &names[start..];
            let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
                malformed(
                    &part,
                    "a link name in the local heap has no terminating NUL",
                )
            })?;
            out.push((String::from_utf8_lossy(&rest[..end]).into_owned(), obj));
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Attributes

    /// All attributes of the object whose header is at `addr`.
    pub fn attributes(&self, addr: u64) -> Result<Vec<Attribute<'a>>, H5Error> {
        let msgs = self.messages(addr)?;
        let part = format!("attribute of the object at address {addr}");
        let mut out = Vec::new();
        for m in &msgs {
            match m.mtype {
                0x0C => out.push(self.parse_attribute(m.data, m.flags, &part)?),
                0x15 => {
                    let ipart = format!("attribute info message of the object at address {addr}");
                    let mut c = self.cursor(m.data, &ipart);
                    let version = c.u8()?;
                    if version != 0 {
                        return Err(unsupported(&ipart, format!("version {version}")));
                    }
                    let flags = c.u8()?;
                    if flags & 1 != 0 {
                        c.skip(2)?;
                    }
                    let heap = c.addr()?;
                    let btree = c.addr()?;
                    if heap == UNDEF {
                        continue;
                    }
                    let heap = FractalHeap::open(self, heap)?;
                    let tree = BTree2::open(self, btree)?;
                    if tree.rtype != 8 {
                        return Err(malformed(
                            &tree.part,
                            format!(
                                "record type {} for an attribute name index (expected 8)",
                                tree.rtype
                            ),
                        ));
                    }
                    for rec in tree.records(self)? {
                        let id = rec.get(..8).unwrap_or(&[]);
                        let flags = rec.get(8).copied().unwrap_or(0);
                        let obj = heap.object(self, id)?;
                        out.push(self.parse_attribute(obj, flags, &heap.part)?);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn parse_attribute(
        &self,
        data: &'a [u8],
        mflags: u8,
        part: &str,
    ) -> Result<Attribute<'a>, H5Error> {
        if mflags & 0x02 != 0 {
            return Err(unsupported(part, "shared attribute message"));
        }
        let mut c = self.cursor(data, part);
        let version = c.u8()?;
        let flags = c.u8()?;
        let name_len = usize::from(c.u16()?);
        let dt_len = usize::from(c.u16()?);
        let ds_len = usize::from(c.u16()?);
        let pad = |n: usize| if version == 1 { n.div_ceil(8) * 8 } else { n };
        match version {
            1 | 2 => {}
            3 => {
                c.skip(1)?; // name character set
            }
            v => return Err(unsupported(part, format!("attribute message version {v}"))),
        }
        if flags & 0x03 != 0 {
            return Err(unsupported(
                part,
                "shared datatype or dataspace in an attribute",
            ));
        }
        let name_raw = c.bytes(pad(name_len))?;
        let name_raw = &name_raw[..name_len];
        let name_raw = name_raw.split(|&b| b == 0).next().unwrap_or(&[]);
        let name = String::from_utf8_lossy(name_raw).into_owned();
        let apart = format!("attribute \"{name}\" ({part})");
        let dt = c.bytes(pad(dt_len))?;
        let dtype = parse_datatype(&dt[..dt_len], &apart)?;
        let ds = c.bytes(pad(ds_len))?;
        let count = parse_dataspace(&ds[..ds_len], c.sl, &apart)?.count;
        let need = count.checked_mul(dtype.size()).ok_or_else(|| {
            malformed(
                &apart,
                format!("{count} elements of {} bytes overflow", dtype.size()),
            )
        })?;
        let left = c.remaining();
        let data = c.bytes(need).map_err(|_| {
            malformed(
                &apart,
                format!(
                    "{count} elements of {} bytes need {need} bytes of data, {left} remain",
                    dtype.size()
                ),
            )
        })?;
        Ok(Attribute {
            name,
            dtype,
            count,
            data,
        })
    }

    /// The values of a string attribute (fixed- or variable-length).
    pub fn attribute_strings(&self, attr: &Attribute<'a>) -> Result<Vec<String>, H5Error> {
        let part = format!("attribute \"{}\"", attr.name);
        match attr.dtype {
            Datatype::FixedString { size, space_pad } => {
                if size == 0 {
                    return Ok(vec![String::new(); attr.count.min(attr.data.len())]);
                }
                Ok(attr
                    .data
                    .chunks_exact(size)
                    .take(attr.count)
                    .map(|s| {
                        let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
                        let mut t = String::from_utf8_lossy(s).into_owned();
                        if space_pad {
                            t.truncate(t.trim_end_matches(' ').len());
                        }
                        t
                    })
                    .collect())
            }
            Datatype::VarString { size } => {
                if size == 0 {
                    return Err(malformed(&part, "variable-length elements of 0 bytes"));
                }
                let mut out = Vec::new();
                // Many elements may name one heap object: bound the total.
                let mut total = 0usize;
                for el in attr.data.chunks_exact(size).take(attr.count) {
                    let mut c = self.cursor(el, &part);
                    let len = u64::from(c.u32()?);
                    let coll = c.addr()?;
                    let index = c.u32()?;
                    if len == 0 {
                        out.push(String::new());
                        continue;
                    }
                    let obj = self.global_heap_object(coll, index)?;
                    let len = to_usize(len, &part, "string length")?;
                    let s = obj.get(..len).ok_or_else(|| {
                        malformed(
                            &part,
                            format!(
                                "a string of {len} bytes in a global heap object of {}",
                                obj.len()
                            ),
                        )
                    })?;
                    let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
                    total = total.saturating_add(s.len());
                    if total > self.data.len() {
                        return Err(malformed(
                            &part,
                            "its strings add up to more bytes than the file has",
                        ));
                    }
                    out.push(String::from_utf8_lossy(s).into_owned());
                }
                Ok(out)
            }
            _ if attr.count == 0 => Ok(Vec::new()),
            ref other => Err(malformed(
                &part,
                format!("expected strings, found {}", other.describe()),
            )),
        }
    }

    /// Object `index` of the global heap collection at `addr`.
    fn global_heap_object(&self, addr: u64, index: u32) -> Result<&'a [u8], H5Error> {
        let part = format!("global heap collection at address {addr}");
        let start = self.slice_from(addr, &part)?;
        let base_off = self.data.len() - start.len();
        if !self.gcol_cache.borrow().contains_key(&addr) {
            self.visit(&part)?;
            let mut c = self.cursor(start, &part);
            c.signature(b"GCOL")?;
            let version = c.u8()?;
            if version != 1 {
                return Err(unsupported(&part, format!("version {version}")));
            }
            c.skip(3)?;
            let size = c.len()?;
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= start.len() && s >= c.pos)
                .ok_or_else(|| {
                    malformed(
                        &part,
                        format!("collection size {size} runs past the end of the file"),
                    )
                })?;
            let mut c = Cursor {
                buf: &start[..size],
                ..c
            };
            let mut objects = HashMap::new();
            let head = 8 + c.sl;
            while c.remaining() >= head {
                let idx = c.u16()?;
                c.skip(2 + 4)?; // reference count, reserved
                let osize = c.len()?;
                if idx == 0 {
                    break; // free space
                }
                let osize = to_usize(osize, &part, "object size")?;
                let pos = c.pos;
                c.bytes(osize)?;
                let padded = osize.div_ceil(8) * 8;
                c.skip((padded - osize).min(c.remaining()))?;
                objects.insert(idx, (base_off + pos, osize));
            }
            self.gcol_cache.borrow_mut().insert(addr, objects);
        }
        let cache = self.gcol_cache.borrow();
        let (pos, len) = u16::try_from(index)
            .ok()
            .and_then(|i| cache.get(&addr).and_then(|m| m.get(&i)))
            .copied()
            .ok_or_else(|| malformed(&part, format!("no object {index}")))?;
        Ok(&self.data[pos..pos + len])
    }

    // ---------------------------------------------------------------
    // Datasets

    /// The shape and values (as `f32`) of the float dataset at `addr`.
    pub fn read_f32(&self, addr: u64) -> Result<(Vec<usize>, Vec<f32>), H5Error> {
        let msgs = self.messages(addr)?;
        let part = format!("dataset at address {addr}");
        let find = |t: u16, what: &str| {
            msgs.iter()
                .find(|m| m.mtype == t)
                .ok_or_else(|| malformed(&part, format!("no {what} message")))
        };
        let dt_msg = find(0x03, "datatype")?;
        if dt_msg.flags & 0x02 != 0 {
            return Err(unsupported(&part, "a shared (committed) datatype"));
        }
        let dtype = parse_datatype(dt_msg.data, &part)?;
        let space = parse_dataspace(find(0x01, "dataspace")?.data, self.sl, &part)?;
        let layout = find(0x08, "data layout")?;
        let (size, big_endian) = match dtype {
            Datatype::Float { size, big_endian } => (size, big_endian),
            other => {
                return Err(unsupported(
                    &part,
                    format!("{} data (expected floats)", other.describe()),
                ))
            }
        };
        if let Some(f) = msgs.iter().find(|m| m.mtype == 0x0B) {
            return Err(unsupported(
                &part,
                format!(
                    "filters ({}): compressed or filtered data",
                    describe_filters(f.data)
                ),
            ));
        }
        let nbytes = space.count.checked_mul(size).ok_or_else(|| {
            malformed(
                &part,
                format!("{} elements of {size} bytes overflow", space.count),
            )
        })?;
        let shape = space.dims.clone();
        let lpart = format!("data layout of {part}");
        let mut c = self.cursor(layout.data, &lpart);
        let version = c.u8()?;
        if !(3..=4).contains(&version) {
            return Err(unsupported(
                &lpart,
                format!("data layout message version {version} (known: 3, 4)"),
            ));
        }
        let class = c.u8()?;
        let raw: Vec<u8>;
        let bytes: &[u8] = match class {
            0 => {
                let n = usize::from(c.u16()?);
                c.bytes(n)?
            }
            1 => {
                let a = c.addr()?;
                let n = c.len()?;
                if a == UNDEF {
                    return Err(malformed(
                        &lpart,
                        "no data was ever written (undefined address)",
                    ));
                }
                self.slice(a, n, &lpart)?
            }
            2 => {
                raw = self.read_chunked(&mut c, version, &space, size, nbytes, &lpart)?;
                &raw
            }
            3 => return Err(unsupported(&lpart, "virtual dataset")),
            k => return Err(malformed(&lpart, format!("layout class {k}"))),
        };
        if bytes.len() < nbytes {
            return Err(malformed(
                &lpart,
                format!(
                    "{} elements of {size} bytes need {nbytes} bytes, the storage has {}",
                    space.count,
                    bytes.len()
                ),
            ));
        }
        let bytes = &bytes[..nbytes];
        let values = decode_floats(bytes, size, big_endian);
        Ok((shape, values))
    }

    /// The bytes of a chunked dataset stored without filters, chunks indexed
    /// by a v1 B-tree (layout version 3, or 4 with index type 1... only
    /// version 3 here).
    fn read_chunked(
        &self,
        c: &mut Cursor<'_, '_>,
        version: u8,
        space: &Dataspace,
        elem: usize,
        nbytes: usize,
        part: &str,
    ) -> Result<Vec<u8>, H5Error> {
        if version != 3 {
            return Err(unsupported(
                part,
                "chunked storage with a version 4 layout (only version 3 chunk indexes are read)",
            ));
        }
        let rank = usize::from(c.u8()?);
        let btree = c.addr()?;
        if rank != space.dims.len() + 1 {
            return Err(malformed(
                part,
                format!(
                    "chunk rank {rank} for a dataset of rank {}",
                    space.dims.len()
                ),
            ));
        }
        let mut chunk = Vec::with_capacity(rank);
        for _ in 0..rank {
            chunk.push(to_usize(u64::from(c.u32()?), part, "chunk dimension")?);
        }
        let chunk_elem = chunk.pop().unwrap_or(0);
        if chunk_elem != elem || chunk.contains(&0) {
            return Err(malformed(part, "bad chunk dimensions"));
        }
        let chunk_bytes = chunk
            .iter()
            .try_fold(elem, |a, &d| a.checked_mul(d))
            .ok_or_else(|| malformed(part, "chunk size overflows"))?;
        // Without filters, every byte of the data is stored in a chunk.
        if nbytes > self.data.len() {
            return Err(malformed(
                part,
                "the dataset is larger than the file could hold",
            ));
        }
        let mut out = vec![0u8; nbytes];
        if btree == UNDEF {
            return Err(malformed(
                part,
                "no data was ever written (undefined address)",
            ));
        }
        let mut seen = HashSet::new();
        let mut chunks = Vec::new();
        self.walk_chunk_btree(btree, None, rank, &mut chunks, &mut seen)?;
        let dims = &space.dims;
        for (offsets, addr, size, mask) in chunks {
            let cpart = format!("chunk at address {addr} of {part}");
            if mask != 0 {
                return Err(unsupported(&cpart, "filtered chunk"));
            }
            let data = self.slice(addr, u64::from(size), &cpart)?;
            if data.len() < chunk_bytes {
                return Err(malformed(
                    &cpart,
                    format!("{} bytes for a chunk of {chunk_bytes}", data.len()),
                ));
            }
            // Copy row by row (last dimension contiguous).
            let r = dims.len();
            if r == 0 {
                let n = elem.min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                continue;
            }
            for (k, &o) in offsets.iter().enumerate().take(r) {
                if o % chunk[k] != 0 || o >= dims[k].max(1) {
                    return Err(malformed(
                        &cpart,
                        format!("chunk offset {o} in dimension {k}"),
                    ));
                }
            }
            let rows: usize = chunk[..r - 1].iter().product();
            let row_len = chunk[r - 1];
            let mut idx = vec![0usize; r - 1];
            for row in 0..rows {
                // Index within the chunk of this row.
                let mut rem = row;
                for k in (0..r - 1).rev() {
                    idx[k] = rem % chunk[k];
                    rem /= chunk[k];
                }
                let mut skip = false;
                let mut lin = 0usize;
                for k in 0..r - 1 {
                    let g = offsets[k] + idx[k];
                    if g >= dims[k] {
                        skip = true;
                        break;
                    }
                    lin = lin * dims[k] + g;
                }
                if skip {
                    continue;
                }
                let g0 = offsets[r - 1];
                let n = row_len.min(dims[r - 1].saturating_sub(g0));
                let dst = (lin * dims[r - 1] + g0) * elem;
                let src = row * row_len * elem;
                out[dst..dst + n * elem].copy_from_slice(&data[src..src + n * elem]);
            }
        }
        Ok(out)
    }

    /// Collects (chunk offsets, address, stored size, filter mask) of a
    /// chunk v1 B-tree.
    fn walk_chunk_btree(
        &self,
        addr: u64,
        level: Option<u8>,
        rank: usize,
        out: &mut Vec<(Vec<usize>, u64, u32, u32)>,
        seen: &mut HashSet<u64>,
    ) -> Result<(), H5Error> {
        let part = format!("chunk B-tree node at address {addr}");
        if !seen.insert(addr) {
            return Err(malformed(&part, "node reached twice: a cycle"));
        }
        self.visit(&part)?;
        let mut c = self.cursor_at(addr, &part)?;
        c.signature(b"TREE")?;
        let ntype = c.u8()?;
        if ntype != 1 {
            return Err(malformed(
                &part,
                format!("node type {ntype} in a chunk B-tree"),
            ));
        }
        let node_level = c.u8()?;
        if let Some(l) = level {
            if node_level != l {
                return Err(malformed(
                    &part,
                    format!("level {node_level} where its parent says {l}"),
                ));
            }
        }
        let entries = usize::from(c.u16()?);
        c.addr()?;
        c.addr()?;
        let mut children = Vec::new();
        for _ in 0..entries {
            let size = c.u32()?;
            let mask = c.u32()?;
            let mut offs = Vec::with_capacity(rank.min(c.remaining() / 8 + 1));
            for _ in 0..rank {
                offs.push(to_usize(c.uvar(8)?, &part, "chunk offset")?);
            }
            let child = c.addr()?;
            children.push((offs, child, size, mask));
        }
        for (offs, child, size, mask) in children {
            if node_level > 0 {
                self.walk_chunk_btree(child, Some(node_level - 1), rank, out, seen)?;
            } else {
                out.push((offs, child, size, mask));
            }
        }
        Ok(())
    }
}

impl Cursor<'_, '_> {
    /// A local-heap offset: "size of lengths" bytes.
    fn len_as_offset(&mut self) -> Result<u64, H5Error> {
        let n = self.sl;
        self.uvar(n)
    }
}

/// Bob Jenkins's lookup3 `hashlittle` with initial value 0: the checksum of
/// HDF5's version 2 metadata.
fn lookup3(key: &[u8]) -> u32 {
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    fn word(k: &[u8]) -> u32 {
        k.iter().enumerate().fold(0u32, |acc, (i, &x)| {
            acc.wrapping_add(u32::from(x) << (8 * i))
        })
    }
    let init = 0xdead_beefu32.wrapping_add(key.len() as u32);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(&k[..k.len().min(4)]));
    if k.len() > 4 {
        b = b.wrapping_add(word(&k[4..k.len().min(8)]));
    }
    if k.len() > 8 {
        c = c.wrapping_add(word(&k[8..]));
    }
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

fn verify_checksum(bytes: &[u8], stored: u32, part: &str) -> Result<(), H5Error> {
    let computed = lookup3(bytes);
    if computed != stored {
        return Err(malformed(
            part,
            format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): damaged"
            ),
        ));
    }
    Ok(())
}

fn check_sizes(so: usize, sl: usize) -> Result<(), H5Error> {
    for (what, v) in [("offsets", so), ("lengths", sl)] {
        if ![2, 4, 8].contains(&v) {
            return Err(unsupported(
                "superblock",
                format!("size of {what} {v} (known: 2, 4, 8)"),
            ));
        }
    }
    Ok(())
}

/// Names the filters of a filter pipeline message, for errors.
fn describe_filters(data: &[u8]) -> String {
    let mut c = Cursor::new(data, "filter pipeline", 8, 8);
    let mut names = Vec::new();
    let parse = |c: &mut Cursor<'_, '_>, names: &mut Vec<String>| -> Result<(), H5Error> {
        let version = c.u8()?;
        let n = c.u8()?;
        if version == 1 {
            c.skip(6)?;
        }
        for _ in 0..n {
            let id = c.u16()?;
            let name_len = if version == 1 || id >= 256 {
                c.u16()?
            } else {
                0
            };
            c.u16()?; // flags
            let nvals = usize::from(c.u16()?);
            let name_len = usize::from(name_len);
            let name_len = if version == 1 {
                name_len.div_ceil(8) * 8
            } else {
                name_len
            };
            c.skip(name_len)?;
            c.skip(nvals * 4)?;
            if version == 1 && nvals % 2 == 1 {
                c.skip(4)?;
            }
            names.push(match id {
                1 => "deflate/gzip".to_string(),
                2 => "shuffle".to_string(),
                3 => "fletcher32".to_string(),
                4 => "szip".to_string(),
                5 => "nbit".to_string(),
                6 => "scaleoffset".to_string(),
                32000 => "lzf".to_string(),
                other => format!("filter {other}"),
            });
        }
        Ok(())
    };
    let _ = parse(&mut c, &mut names);
    if names.is_empty() {
        "unknown".into()
    } else {
        names.join(", ")
    }
}

/// The dimensions of a dataspace and its element count.
pub(crate) struct Dataspace {
    pub dims: Vec<usize>,
    pub count: usize,
}

fn parse_dataspace(data: &[u8], sl: usize, part: &str) -> Result<Dataspace, H5Error> {
    let part = format!("dataspace of {part}");
    let mut c = Cursor::new(data, &part, 8, sl);
    let version = c.u8()?;
    let rank = usize::from(c.u8()?);
    let flags = c.u8()?;
    let null = match version {
        1 => {
            c.skip(5)?;
            false
        }
        2 => {
            let t = c.u8()?;
            match t {
                0 | 1 => false,
                2 => true,
                t => return Err(malformed(&part, format!("dataspace type {t}"))),
            }
        }
        v => return Err(unsupported(&part, format!("dataspace version {v}"))),
    };
    if rank > 32 {
        return Err(malformed(&part, format!("rank {rank} (at most 32)")));
    }
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        dims.push(to_usize(c.len()?, &part, "dimension")?);
    }
    let _ = flags; // maximum dimensions (and permutations) follow; unused
    if null {
        return Ok(Dataspace {
            dims: Vec::new(),
            count: 0,
        });
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| malformed(&part, format!("dimensions {dims:?} overflow")))?;
    Ok(Dataspace { dims, count })
}

fn parse_datatype(data: &[u8], part: &str) -> Result<Datatype, H5Error> {
    let part = format!("datatype of {part}");
    let mut c = Cursor::new(data, &part, 8, 8);
    let cv = c.u8()?;
    let class = cv & 0x0F;
    let b0 = c.u8()?;
    let b1 = c.u8()?;
    let _b2 = c.u8()?;
    let size = to_usize(u64::from(c.u32()?), &part, "element size")?;
    Ok(match class {
        0 => Datatype::Int {
            size,
            signed: b0 & 0x08 != 0,
            big_endian: b0 & 1 != 0,
        },
        1 => {
            if b0 & 0x40 != 0 {
                return Err(unsupported(&part, "VAX float byte order"));
            }
            let big_endian = b0 & 1 != 0;
            c.u16()?; // bit offset
            let precision = c.u16()?;
            let _exp_loc = c.u8()?;
            let exp_size = c.u8()?;
            let _man_loc = c.u8()?;
            let man_size = c.u8()?;
            let ieee = matches!(
                (size, precision, exp_size, man_size),
                (2, 16, 5, 10) | (4, 32, 8, 23) | (8, 64, 11, 52)
            );
            if !ieee {
                return Err(unsupported(
                    &part,
                    format!(
                        "a {size}-byte float with {precision} bits, {exp_size}-bit exponent and \
                         {man_size}-bit mantissa (known: IEEE half, single and double)"
                    ),
                ));
            }
            Datatype::Float { size, big_endian }
        }
        3 => Datatype::FixedString {
            size,
            space_pad: b0 & 0x0F == 2,
        },
        9 => {
            let vtype = b0 & 0x0F;
            let is_string = vtype == 1 || {
                // A sequence of 1-byte elements reads as a string too.
                let base = data.get(8..).map(|d| parse_datatype(d, &part));
                matches!(
                    base,
                    Some(Ok(
                        Datatype::Int { size: 1, .. } | Datatype::FixedString { size: 1, .. }
                    ))
                )
            };
            if !is_string {
                return Ok(Datatype::Other { class, size });
            }
            let _ = b1;
            Datatype::VarString { size }
        }
        _ => Datatype::Other { class, size },
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let man = u32::from(h & 0x3FF);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, m) => sign | 0x7FC0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn decode_floats(bytes: &[u8], size: usize, big_endian: bool) -> Vec<f32> {
    match size {
        2 => bytes
            .chunks_exact(2)
            .map(|b| {
                let a = [b[0], b[1]];
                f16_to_f32(if big_endian {
                    u16::from_be_bytes(a)
                } else {
                    u16::from_le_bytes(a)
                })
            })
            .collect(),
        4 => bytes
            .chunks_exact(4)
            .map(|b| {
                let a = [b[0], b[1], b[2], b[3]];
                if big_endian {
                    f32::from_be_bytes(a)
                } else {
                    f32::from_le_bytes(a)
                }
            })
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (if big_endian {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }) as f32
            })
            .collect(),
    }
}

// -------------------------------------------------------------------
// Fractal heap (dense link and attribute storage)

struct FractalHeap {
    part: String,
    id_len: usize,
    width: u64,
    start_block: u64,
    max_direct: u64,
    root: u64,
    rows: u64,
    checksummed: bool,
    off_size: usize,
    len_size: usize,
    max_direct_rows: u64,
}

impl FractalHeap {
    fn open(f: &File<'_>, addr: u64) -> Result<Self, H5Error> {
        let part = format!("fractal heap at address {addr}");
        f.visit(&part)?;
        let mut c = f.cursor_at(addr, &part)?;
        c.signature(b"FRHP")?;
        let version = c.u8()?;
        if version != 0 {
            return Err(unsupported(&part, format!("version {version}")));
        }
        let id_len = usize::from(c.u16()?);
        let filters_len = c.u16()?;
        let flags = c.u8()?;
        let max_managed = c.u32()?;
        c.len()?; // next huge ID
        c.addr()?; // huge objects B-tree
        c.len()?; // free space
        c.addr()?; // free space manager
        c.len()?; // managed space
        c.len()?; // allocated managed space
        c.len()?; // direct block allocation iterator
        c.len()?; // managed objects
        c.len()?; // huge objects size
        c.len()?; // huge objects count
        c.len()?; // tiny objects size
        c.len()?; // tiny objects count
        let width = u64::from(c.u16()?);
        let start_block = c.len()?;
        let max_direct = c.len()?;
        let max_heap_bits = c.u16()?;
        c.u16()?; // starting rows
        let root = c.addr()?;
        let rows = u64::from(c.u16()?);
        if filters_len != 0 {
            return Err(unsupported(&part, "filtered (compressed) fractal heap"));
        }
        let end = c.pos;
        verify_checksum(&c.buf[..end], c.u32()?, &part)?;
        let pow2 = |v: u64| v != 0 && v.is_power_of_two();
        if width == 0 || !pow2(start_block) || !pow2(max_direct) || max_direct < start_block {
            return Err(malformed(
                &part,
                format!(
                    "table width {width}, starting block size {start_block}, maximum direct \
                     block size {max_direct}"
                ),
            ));
        }
        if max_heap_bits == 0 || max_heap_bits > 64 {
            return Err(malformed(
                &part,
                format!("maximum heap size {max_heap_bits} bits"),
            ));
        }
        let off_size = usize::from(max_heap_bits).div_ceil(8);
        let log2_direct = u64::from(max_direct.trailing_zeros());
        let dir_len_size = (log2_direct as usize).div_ceil(8);
        let len_size = dir_len_size.min(limit_enc_size(u64::from(max_managed)));
        let max_direct_rows = log2_direct - u64::from(start_block.trailing_zeros()) + 2;
        Ok(FractalHeap {
            part,
            id_len,
            width,
            start_block,
            max_direct,
            root,
            rows,
            checksummed: flags & 0x02 != 0,
            off_size,
            len_size,
            max_direct_rows,
        })
    }

    /// Block size of row `r`.
    fn row_size(&self, r: u64) -> Option<u64> {
        if r < 2 {
            Some(self.start_block)
        } else {
            self.start_block
                .checked_mul(1u64.checked_shl((r - 1) as u32)?)
        }
    }

    /// The bytes of the object with heap ID `id`.
    fn object<'a>(&self, f: &File<'a>, id: &'a [u8]) -> Result<&'a [u8], H5Error> {
        let part = &self.part;
        if id.is_empty() {
            return Err(malformed(part, "empty heap ID"));
        }
        let mut c = f.cursor(id, part);
        let b0 = c.u8()?;
        if b0 >> 6 != 0 {
            return Err(unsupported(part, format!("heap ID version {}", b0 >> 6)));
        }
        match (b0 >> 4) & 3 {
            0 => {}
            1 => return Err(unsupported(part, "\"huge\" objects (over 64 KB)")),
            2 => {
                // Tiny: the data is in the ID.
                let (len, skip) = if self.id_len <= 18 {
                    (usize::from(b0 & 0x0F) + 1, 1)
                } else {
                    let b1 = usize::from(*id.get(1).unwrap_or(&0));
                    (((usize::from(b0 & 0x0F)) << 8 | b1) + 1, 2)
                };
                return id.get(skip..skip + len).ok_or_else(|| {
                    malformed(
                        part,
                        format!(
                            "a tiny object of {len} bytes in a {}-byte heap ID",
                            id.len()
                        ),
                    )
                });
            }
            t => return Err(malformed(part, format!("heap ID type {t}"))),
        }
        let off = c.uvar(self.off_size)?;
        let len = c.uvar(self.len_size)?;
        // Find the direct block holding `off`.
        let (block_addr, block_off, block_size) = if self.rows == 0 {
            (self.root, 0u64, self.start_block)
        } else {
            let mut row_start = 0u64;
            let mut found = None;
            for r in 0..self.rows {
                let size = self
                    .row_size(r)
                    .ok_or_else(|| malformed(part, "row size overflows"))?;
                let row_len = size
                    .checked_mul(self.width)
                    .ok_or_else(|| malformed(part, "row size overflows"))?;
                if off < row_start.saturating_add(row_len) {
                    if r >= self.max_direct_rows || size > self.max_direct {
                        return Err(unsupported(
                            part,
                            "objects in nested indirect blocks (a heap over ~1 MB)",
                        ));
                    }
                    let col = (off - row_start) / size;
                    found = Some((r * self.width + col, row_start + col * size, size));
                    break;
                }
                row_start = row_start.saturating_add(row_len);
            }
            let (entry, boff, bsize) = found.ok_or_else(|| {
                malformed(part, format!("heap offset {off} is past the heap's blocks"))
            })?;
            let ipart = format!("root indirect block at address {} of {part}", self.root);
            let mut ic = f.cursor_at(self.root, &ipart)?;
            ic.signature(b"FHIB")?;
            ic.skip(1)?;
            ic.addr()?;
            ic.skip(self.off_size)?;
            let so = ic.so as u64;
            let skip = entry
                .checked_mul(so)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| malformed(&ipart, "entry offset overflows"))?;
            ic.skip(skip)?;
            let a = ic.addr()?;
            if a == UNDEF {
                return Err(malformed(
                    &ipart,
                    format!("heap offset {off} falls in an unallocated block"),
                ));
            }
            (a, boff, bsize)
        };
        let dpart = format!("direct block at address {block_addr} of {part}");
        let block = f.slice(block_addr, block_size, &dpart)?;
        let mut dc = f.cursor(block, &dpart);
        dc.signature(b"FHDB")?;
        let within = off - block_off;
        let header = 5 + dc.so + self.off_size + if self.checksummed { 4 } else { 0 };
        let start = usize::try_from(within)
            .ok()
            .filter(|&s| s >= header)
            .ok_or_else(|| {
                malformed(
                    &dpart,
                    format!("heap offset {off} is inside the block header"),
                )
            })?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= block.len())
            .ok_or_else(|| {
                malformed(
                    &dpart,
                    format!("an object of {len} bytes at heap offset {off} runs past its block"),
                )
            })?;
        Ok(&block[start..end])
    }
}

// -------------------------------------------------------------------
// Version 2 B-trees (indexes of dense links and attributes)

struct BTree2 {
    part: String,
    rtype: u8,
    node_size: usize,
    rec_size: usize,
    depth: usize,
    root: u64,
    root_nrec: usize,
    /// Bytes of the "number of records" field of child pointers.
    nrec_size: usize,
    /// Per depth, bytes of the "total records" field of child pointers.
    total_size: Vec<usize>,
}

impl BTree2 {
    fn open(f: &File<'_>, addr: u64) -> Result<Self, H5Error> {
        let part = format!("v2 B-tree at address {addr}");
        f.visit(&part)?;
        let mut c = f.cursor_at(addr, &part)?;
        c.signature(b"BTHD")?;
        let version = c.u8()?;
        if version != 0 {
            return Err(unsupported(&part, format!("version {version}")));
        }
        let rtype = c.u8()?;
        let node_size = to_usize(u64::from(c.u32()?), &part, "node size")?;
        let rec_size = usize::from(c.u16()?);
        let depth = usize::from(c.u16()?);
        c.skip(2)?; // split, merge percent
        let root = c.addr()?;
        let root_nrec = usize::from(c.u16()?);
        c.len()?; // total records
        let end = c.pos;
        verify_checksum(&c.buf[..end], c.u32()?, &part)?;
        if rec_size == 0 || node_size < 10 + rec_size || depth > 16 {
            return Err(malformed(
                &part,
                format!("node size {node_size}, record size {rec_size}, depth {depth}"),
            ));
        }
        let so = c.so;
        let leaf_max = ((node_size - 10) / rec_size) as u64;
        let nrec_size = limit_enc_size(leaf_max);
        let mut cum = vec![leaf_max];
        let mut total_size = vec![0usize];
        for d in 1..=depth {
            let ptr = so + nrec_size + if d > 1 { total_size[d - 1] } else { 0 };
            let max = (node_size.saturating_sub(10 + ptr) / (rec_size + ptr)) as u64;
            let c = max
                .saturating_add(1)
                .saturating_mul(cum[d - 1])
                .saturating_add(max);
            cum.push(c);
            total_size.push(limit_enc_size(c));
        }
        Ok(BTree2 {
            part,
            rtype,
            node_size,
            rec_size,
            depth,
            root,
            root_nrec,
            nrec_size,
            total_size,
        })
    }

    /// All records, in order.
    fn records<'a>(&self, f: &File<'a>) -> Result<Vec<&'a [u8]>, H5Error> {
        let mut out = Vec::new();
        if self.root == UNDEF || self.root_nrec == 0 {
            return Ok(out);
        }
        let mut seen = HashSet::new();
        self.node(
            f,
            self.root,
            self.depth,
            self.root_nrec,
            &mut out,
            &mut seen,
        )?;
        Ok(out)
    }

    fn node<'a>(
        &self,
        f: &File<'a>,
        addr: u64,
        depth: usize,
        nrec: usize,
        out: &mut Vec<&'a [u8]>,
        seen: &mut HashSet<u64>,
    ) -> Result<(), H5Error> {
        let part = format!("v2 B-tree node at address {addr} of {}", self.part);
        if !seen.insert(addr) {
            return Err(malformed(&part, "node reached twice: a cycle"));
        }
        f.visit(&part)?;
        let block = f.slice(addr, self.node_size as u64, &part)?;
        let mut c = f.cursor(block, &part);
        c.signature(if depth == 0 { b"BTLF" } else { b"BTIN" })?;
        c.skip(1)?;
        let t = c.u8()?;
        if t != self.rtype {
            return Err(malformed(
                &part,
                format!("record type {t}, the tree's is {}", self.rtype),
            ));
        }
        let mut recs = Vec::new();
        for _ in 0..nrec {
            recs.push(c.bytes(self.rec_size)?);
        }
        if depth == 0 {
            out.extend(recs);
            return Ok(());
        }
        let mut children = Vec::new();
        for _ in 0..=nrec {
            let a = c.addr()?;
            let n = to_usize(c.uvar(self.nrec_size)?, &part, "record count")?;
            if depth > 1 {
                c.skip(self.total_size[depth - 1])?;
            }
            children.push((a, n));
        }
        for (i, (a, n)) in children.into_iter().enumerate() {
            self.node(f, a, depth - 1, n, out, seen)?;
            if let Some(r) = recs.get(i) {
                out.push(r);
            }
        }
        Ok(())
    }
}
