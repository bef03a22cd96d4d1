//! Keras's nearest resize of a baseline JPEG, decoding only what it picks.
//!
//! `flow_from_directory` without augmentation resizes with PIL's nearest
//! filter: of a 500x375 photo resized to 150x150, it keeps 12% of the
//! pixels. A full decode (zune-jpeg) inverse-transforms every 8x8 block,
//! upsamples the whole chroma planes and interleaves the whole image,
//! before the resize throws most of it away. Here the entropy-coded data is
//! still read in full (Huffman decoding cannot skip), but:
//! - a luma block's inverse DCT computes only the rows the resize picks,
//!   from its nonzero coefficients only (two rows at a time, AVX2 + FMA
//!   where the CPU has them), into the picked rows at full width;
//! - subsampled chroma is inverse-transformed into its (quarter or half
//!   size) planes, and upsampled only at the picked points, by zune-jpeg's
//!   filter (the triangle filter, vertically then horizontally, `(3 near +
//!   far + 2) >> 2`, edges repeated);
//! - the picked columns of those rows make the `th` x `tw` YCbCr image,
//!   which the caller converts to RGB as it converts zune-jpeg's pixels.
//!
//! The same decoder gives augmentation the whole image ([`decode_full`]):
//! every block's inverse DCT into planes, then, row by row, chroma
//! upsampled by the same filter and interleaved with luma, as zune-jpeg's
//! YCbCr output; 20-25% faster than zune-jpeg's (its Huffman decoding
//! keeps the bit buffer in registers, and looks up a code and its value
//! bits at once, end-of-block codes and DC differences too).
//!
//! The result is what zune-jpeg's full decode followed by the nearest pick
//! gives, up to the rounding of the inverse DCT (this one is exact in
//! `f32`, zune-jpeg's is integer): within 1 level of Y, Cb and Cr, tested.
//!
//! Only the common kind is taken: baseline or extended-sequential Huffman
//! (SOF0/SOF1), 8-bit, three components in one interleaved scan, chroma
//! at 1x1 and luma at 1x1, 2x1 or 2x2 (4:4:4, 4:2:2, 4:2:0), restart
//! intervals allowed. Anything else (progressive, arithmetic, grayscale, CMYK, Adobe RGB, other sampling), and any data
//! this reader finds wrong (a bad Huffman code, a missing restart marker,
//! data that ends early), gives `None`: the caller decodes the file the
//! full way, whose decoder then decides what is valid and what the error
//! says. So this path never accepts what the full decoder refuses.

use crate::fast::nearest_index;

/// The natural (row-major) index of the `k`-th coefficient in zigzag order.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// For each zigzag position `k`, the largest row (`>> 4`) and column (`&
/// 15`) among positions `0..=k`: bounds of a block's nonzero coefficients
/// from the position of its last one.
const EXTENT: [u8; 64] = {
    let mut t = [0u8; 64];
    let (mut row, mut col) = (0, 0);
    let mut k = 0;
    while k < 64 {
        let z = ZIGZAG[k];
        if z >> 3 > row {
            row = z >> 3;
        }
        if z & 7 > col {
            col = z & 7;
        }
        t[k] = row << 4 | col;
        k += 1;
    }
    t
};

/// The flag of the end-of-block code in [`Huffman::ac`] (above its 5
/// bits of length).
const EOB: i32 = 1 << 5;

/// Bits looked up at once in a Huffman table.
const LOOK: u32 = 11;

/// Why this path declines an image (the caller then decodes it in full).
type Declined = ();

/// A Huffman table, canonical codes from the `DHT` segment.
struct Huffman {
    /// Indexed by the next `LOOK` bits: `(length << 8) | symbol` for codes
    /// of at most `LOOK` bits, 0 for longer ones.
    fast: Box<[u16; 1 << LOOK]>,
    /// Indexed the same way, where a code and its value bits fit in
    /// `LOOK` bits together: `(value << 16) | (run << 8) | bits` (for DC
    /// tables the difference, run 0); for the end-of-block code of an AC
    /// table, `EOB | bits`; else 0.
    ac: Box<[i32; 1 << LOOK]>,
    /// `maxcode[l]`: one past the largest code of length `l`, left-aligned
    /// to 16 bits (0 where no code has that length).
    maxcode: [u32; 18],
    /// `delta[l]`: the index in `values` of a code of length `l` is its
    /// value plus `delta[l]`.
    delta: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    /// Builds the table from the 16 counts and the symbols; `None` for an
    /// over-subscribed code.
    fn new(counts: &[u8; 16], values: &[u8], is_ac: bool) -> Option<Huffman> {
        let mut fast = Box::new([0u16; 1 << LOOK]);
        let mut maxcode = [0u32; 18];
        let mut delta = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as usize;
            delta[len as usize] = k as i32 - code as i32;
            for _ in 0..n {
                if code >= 1 << len {
                    return None;
                }
                if len <= LOOK {
                    let shift = LOOK - len;
                    let start = (code << shift) as usize;
                    let entry = ((len as u16) << 8) | u16::from(values[k]);
                    fast[start..start + (1 << shift)].fill(entry);
                }
                code += 1;
                k += 1;
            }
            // As libjpeg and zune-jpeg refuse it: a code of all ones.
            if n > 0 && code >= 1 << len {
                return None;
            }
            maxcode[len as usize] = code << (16 - len);
            code <<= 1;
        }
        maxcode[17] = u32::MAX;
        // As zune-jpeg refuses them: DC symbols (sizes) over 15.
        if !is_ac && values.iter().any(|&v| v > 15) {
            return None;
        }
        let mut ac = Box::new([0i32; 1 << LOOK]);
        for (i, slot) in ac.iter_mut().enumerate() {
            let e = fast[i];
            let (len, symbol) = (u32::from(e >> 8), u32::from(e & 0xFF));
            // A DC symbol is a size; an AC symbol a run of zeros and a size
            // (run 0 and size 0: the end of the block).
            let (run, size) = if is_ac {
                (symbol >> 4, symbol & 15)
            } else {
                (0, symbol)
            };
            if len == 0 || size > 11 || len + size > LOOK {
                continue;
            }
            if is_ac && symbol == 0 {
                *slot = EOB | len as i32;
            } else if !is_ac || size != 0 {
                let bits = (i as u32 >> (LOOK - len - size)) & ((1 << size) - 1);
                *slot = (extend(bits, size) << 16) | (run << 8) as i32 | (len + size) as i32;
            }
        }
        Some(Huffman {
            fast,
            ac,
            maxcode,
            delta,
            values: values.to_vec(),
        })
    }
}

/// The signed value of `size` raw bits (JPEG's EXTEND).
#[inline(always)]
fn extend(bits: u32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if bits < 1 << (size - 1) {
        bits as i32 - (1 << size) + 1
    } else {
        bits as i32
    }
}

/// The entropy-coded data, read most significant bit first, with byte
/// stuffing removed. At a marker (or the end) it feeds zeros, counting
/// them, so that reading past the data shows as `overread`.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// The next `n` bits, left-aligned (the bits below may be the stream's
    /// following bits, never anything else).
    acc: u64,
    n: u32,
    /// Zero bits fed in place of data, at the end of `acc`'s valid bits.
    fake: u32,
    /// The data ended at a marker zune-jpeg does not know.
    bad_marker: bool,
}

/// The markers zune-jpeg knows where the entropy-coded data ends (it
/// refuses the others).
fn known_marker(m: u8) -> bool {
    matches!(m, 0xC0..=0xC2 | 0xC4 | 0xCC | 0xD0..=0xDD | 0xE0..=0xE2 | 0xED | 0xEE | 0xFE)
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            acc: 0,
            n: 0,
            fake: 0,
            bad_marker: false,
        }
    }

    /// At least 57 bits in `acc`.
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(&b) = self.data.get(self.pos..).and_then(|d| d.first_chunk::<8>()) {
            let w = u64::from_be_bytes(b);
            // No 0xFF byte among the eight: no stuffing, no marker.
            let x = !w;
            if (x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080) == 0
                && self.fake == 0
            {
                self.acc |= w >> self.n;
                let k = (64 - self.n) / 8;
                self.pos += k as usize;
                self.n += 8 * k;
                return;
            }
        }
        self.refill_slow();
    }

    #[inline(never)]
    fn refill_slow(&mut self) {
        while self.n <= 56 {
            let mut byte = 0u8;
            if self.fake == 0 && self.pos < self.data.len() {
                byte = self.data[self.pos];
                if byte == 0xFF {
                    if self.data.get(self.pos + 1) == Some(&0) {
                        self.pos += 2;
                    } else {
                        // A marker: zeros from here on. One zune-jpeg does
                        // not know (past fill bytes) is an error there:
                        // declined here.
                        let m = self.data[self.pos..].iter().find(|&&b| b != 0xFF);
                        if m.is_some_and(|&m| !known_marker(m)) {
                            self.bad_marker = true;
                        }
                        byte = 0;
                        self.fake += 8;
                    }
                } else {
                    self.pos += 1;
                }
            } else {
                self.fake += 8;
            }
            self.acc |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
    }

    #[inline(always)]
    fn peek(&self, k: u32) -> u32 {
        (self.acc >> (64 - k)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, k: u32) {
        self.acc <<= k;
        self.n -= k;
    }

    /// Whether a code or value was read from the zeros fed past the data,
    /// or the data ended at a marker zune-jpeg would refuse there.
    fn overread(&self) -> bool {
        self.n < self.fake || self.bad_marker
    }

    #[inline(never)]
    fn symbol_slow(&mut self, h: &Huffman) -> Result<u32, Declined> {
        let bits16 = self.peek(16);
        let mut len = LOOK as usize + 1;
        while bits16 >= h.maxcode[len] {
            len += 1;
        }
        if len > 16 {
            return Err(());
        }
        let index = (bits16 >> (16 - len)) as i32 + h.delta[len];
        let v = *h.values.get(index as usize).ok_or(())?;
        self.consume(len as u32);
        Ok(u32::from(v))
    }

    /// Past a restart marker `RSTm`: the bits left in the current byte are
    /// padding, and the marker must come next.
    fn restart(&mut self, m: u8) -> Result<(), Declined> {
        if self.overread() {
            return Err(());
        }
        // Whole bytes still buffered (not fed zeros) are data the scan did
        // not use: declined, as something is off.
        if self.n - self.fake >= 8 {
            return Err(());
        }
        if self.data.get(self.pos..self.pos + 2) != Some(&[0xFF, 0xD0 + m]) {
            return Err(());
        }
        self.pos += 2;
        (self.acc, self.n, self.fake) = (0, 0, 0);
        Ok(())
    }
}

/// One block's dequantised coefficients (natural order), and bounds of
/// the horizontal and vertical frequencies with a nonzero one (those of
/// the zigzag positions up to the last nonzero one: no bookkeeping per
/// coefficient).
struct Block {
    coef: [f32; 64],
    umax: usize,
    vmax: usize,
}

impl Block {
    fn new() -> Self {
        Block {
            coef: [0.0; 64],
            umax: 0,
            vmax: 0,
        }
    }

    /// Zeroes what the last block set.
    #[inline(always)]
    fn clear(&mut self) {
        for v in 0..=self.vmax {
            self.coef[v * 8..v * 8 + 8].fill(0.0);
        }
        (self.umax, self.vmax) = (0, 0);
    }
}

/// Decodes one block into `b` (cleared first), the DC predictor updated.
/// The bit buffer lives in locals here (written back around the rare
/// out-of-line calls), not in `bits`: through memory, every symbol's
/// shift waited on a store and a load.
#[inline(always)]
fn decode_block(
    bits: &mut Bits,
    dc: &Huffman,
    ac: &Huffman,
    q: &[f32; 64],
    pred: &mut i32,
    b: &mut Block,
) -> Result<(), Declined> {
    b.clear();
    let (mut acc, mut n) = (bits.acc, bits.n);
    macro_rules! refill {
        () => {
            if n < 32 {
                (bits.acc, bits.n) = (acc, n);
                bits.refill();
                (acc, n) = (bits.acc, bits.n);
            }
        };
    }
    macro_rules! consume {
        ($k:expr) => {{
            let k = $k;
            acc <<= k;
            n -= k;
        }};
    }
    macro_rules! symbol {
        ($h:expr) => {{
            let e = $h.fast[(acc >> (64 - LOOK)) as usize];
            if e != 0 {
                consume!(u32::from(e >> 8));
                u32::from(e & 0xFF)
            } else {
                (bits.acc, bits.n) = (acc, n);
                let s = bits.symbol_slow($h)?;
                (acc, n) = (bits.acc, bits.n);
                s
            }
        }};
    }
    macro_rules! value {
        ($size:expr) => {{
            let size: u32 = $size;
            if size == 0 {
                0
            } else {
                let raw = (acc >> (64 - size)) as u32;
                consume!(size);
                extend(raw, size)
            }
        }};
    }
    refill!();
    let f = dc.ac[(acc >> (64 - LOOK)) as usize];
    let diff = if f != 0 {
        consume!((f & 31) as u32);
        f >> 16
    } else {
        let s = symbol!(dc);
        if s > 11 {
            return Err(());
        }
        value!(s)
    };
    *pred = pred.wrapping_add(diff);
    b.coef[0] = *pred as f32 * q[0];
    // The position of the last nonzero coefficient (or 0).
    let mut last = 0usize;
    let mut k = 1usize;
    while k < 64 {
        refill!();
        let f = ac.ac[(acc >> (64 - LOOK)) as usize];
        if f != 0 {
            if f & EOB != 0 {
                consume!((f & 31) as u32);
                break;
            }
            k += ((f >> 8) & 15) as usize;
            consume!((f & 31) as u32);
            if k > 63 {
                return Err(());
            }
            b.coef[ZIGZAG[k] as usize] = (f >> 16) as f32 * q[k];
            last = k;
            k += 1;
            continue;
        }
        let s = symbol!(ac);
        let (run, size) = ((s >> 4) as usize, s & 15);
        if size == 0 {
            if run == 15 {
                k += 16;
                continue;
            }
            break;
        }
        k += run;
        if k > 63 || size > 10 {
            return Err(());
        }
        b.coef[ZIGZAG[k] as usize] = value!(size) as f32 * q[k];
        last = k;
        k += 1;
    }
    (bits.acc, bits.n) = (acc, n);
    let e = EXTENT[last & 63];
    (b.vmax, b.umax) = (usize::from(e >> 4), usize::from(e & 15));
    Ok(())
}

/// `BASIS[k][x] = C(k) cos((2x + 1) k pi / 16) / 2`, `C(0) = 1/sqrt(2)`:
/// a pixel is `sum_v sum_u BASIS[v][y] BASIS[u][x] F[v][u]`.
fn basis() -> [[f32; 8]; 8] {
    let mut t = [[0.0f32; 8]; 8];
    for (k, row) in t.iter_mut().enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            let c = if k == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            *v = (c * ((2 * x + 1) as f64 * k as f64 * std::f64::consts::PI / 16.0).cos() / 2.0)
                as f32;
        }
    }
    t
}

/// Rows `ys` of the block's inverse DCT, level-shifted, rounded and
/// clamped to 0..=255, into `out[y]`. First the horizontal transform of
/// each coefficient row with a nonzero value, `g[v] = sum_u F[v][u]
/// basis[u]` (vectors over `x`), then each row `y` asked for, `128 +
/// sum_v basis[v][y] g[v]`: every product a scalar times a vector, and
/// `(vmax + 1) (umax + 1 + rows)` of them. For whole blocks (the chroma
/// planes); for the few rows of a luma block [`idct_pairs`] costs less.
#[inline(always)]
fn idct_rows_plain(b: &Block, basis: &[[f32; 8]; 8], ys: &[usize], out: &mut [[u8; 8]; 8]) {
    let (vmax, umax) = (b.vmax.min(7), b.umax.min(7));
    let mut g = [[0.0f32; 8]; 8];
    for (v, g) in g.iter_mut().enumerate().take(vmax + 1) {
        for (u, bu) in basis.iter().enumerate().take(umax + 1) {
            let c = b.coef[v * 8 + u];
            for x in 0..8 {
                g[x] += c * bu[x];
            }
        }
    }
    for &y in ys {
        let mut p = [128.5f32; 8];
        for (v, g) in g.iter().enumerate().take(vmax + 1) {
            let c = basis[v][y & 7];
            for x in 0..8 {
                p[x] += c * g[x];
            }
        }
        for (o, &p) in out[y & 7].iter_mut().zip(&p) {
            // `as u8` saturates: clamped to 0..=255, truncating the `+ 0.5`.
            *o = p as u8;
        }
    }
}

/// [`idct_rows_plain`] in AVX2 + FMA, two rows at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn idct_rows_avx2(b: &Block, basis: &[[f32; 8]; 8], ys: &[usize], out: &mut [[u8; 8]; 8]) {
    use std::arch::x86_64::*;
    let (vmax, umax) = (b.vmax.min(7), b.umax.min(7));
    // SAFETY (all loads): rows of 8 values, `v * 8 + u < 64` for `u, v <=
    // 7`.
    let bas = |u: usize| _mm256_loadu_ps(basis[u].as_ptr());
    let mut g = [_mm256_setzero_ps(); 8];
    for (v, g) in g.iter_mut().enumerate().take(vmax + 1) {
        let c = &b.coef[v * 8..v * 8 + 8];
        let mut acc = _mm256_mul_ps(_mm256_set1_ps(c[0]), bas(0));
        for (u, &cu) in c.iter().enumerate().take(umax + 1).skip(1) {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(cu), bas(u), acc);
        }
        *g = acc;
    }
    let clamp = |p: __m256| {
        let p = _mm256_min_ps(_mm256_max_ps(p, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
        _mm256_cvttps_epi32(p)
    };
    for pair in ys.chunks(2) {
        let (y1, y2) = (pair[0] & 7, pair[pair.len() - 1] & 7);
        let (mut p1, mut p2) = (_mm256_set1_ps(128.5), _mm256_set1_ps(128.5));
        for (v, &g) in g.iter().enumerate().take(vmax + 1) {
            p1 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y1]), g, p1);
            p2 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y2]), g, p2);
        }
        // 8 + 8 values to 16 bytes: packed to u16 by 128-bit lanes (row
        // 1's low half, row 2's, row 1's high half, row 2's), reordered,
        // packed to u8.
        let w = _mm256_packus_epi32(clamp(p1), clamp(p2));
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
        let bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
        let mut two = [[0u8; 8]; 2];
        _mm_storeu_si128(two.as_mut_ptr().cast(), bytes);
        (out[y1], out[y2]) = (two[0], two[1]);
    }
}

/// [`idct_rows_plain`], in AVX2 + FMA with `SIMD` (which only the caller
/// that detected those features passes).
#[inline(always)]
fn idct_rows<const SIMD: bool>(
    b: &Block,
    basis: &[[f32; 8]; 8],
    ys: &[usize],
    out: &mut [[u8; 8]; 8],
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: `SIMD` is true only under `decode_frame`'s detection of
        // AVX2 and FMA.
        unsafe { idct_rows_avx2(b, basis, ys, out) };
        return;
    }
    idct_rows_plain(b, basis, ys, out)
}

/// Rows `y1` and `y2` of the block's inverse DCT, level-shifted, rounded
/// and clamped to 0..=255. Two rows, and even and odd terms apart: four
/// independent sums, so the additions' latency overlaps.
#[inline(always)]
fn idct_pair(b: &Block, basis: &[[f32; 8]; 8], y1: usize, y2: usize) -> [[u8; 8]; 2] {
    let row = |v: usize| -> &[f32; 8] { b.coef[v * 8..].first_chunk::<8>().unwrap_or(&[0.0; 8]) };
    let (mut t1, mut t2, mut s1, mut s2) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let mut v = 0;
    while v < b.vmax {
        let (r0, r1) = (row(v), row(v + 1));
        let (a1, a2) = (basis[v][y1 & 7], basis[v][y2 & 7]);
        let (c1, c2) = (basis[v + 1][y1 & 7], basis[v + 1][y2 & 7]);
        for u in 0..8 {
            t1[u] = a1.mul_add(r0[u], t1[u]);
            t2[u] = a2.mul_add(r0[u], t2[u]);
            s1[u] = c1.mul_add(r1[u], s1[u]);
            s2[u] = c2.mul_add(r1[u], s2[u]);
        }
        v += 2;
    }
    if v == b.vmax {
        let r0 = row(v);
        let (a1, a2) = (basis[v][y1 & 7], basis[v][y2 & 7]);
        for u in 0..8 {
            t1[u] = a1.mul_add(r0[u], t1[u]);
            t2[u] = a2.mul_add(r0[u], t2[u]);
        }
    }
    for u in 0..8 {
        t1[u] += s1[u];
        t2[u] += s2[u];
    }
    let (mut p1, mut p2, mut q1, mut q2) = ([128.5f32; 8], [128.5f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let mut u = 0;
    while u < b.umax {
        let (b0, b1) = (&basis[u], &basis[u + 1]);
        let (x1, x2, z1, z2) = (t1[u], t2[u], t1[u + 1], t2[u + 1]);
        for x in 0..8 {
            p1[x] = x1.mul_add(b0[x], p1[x]);
            p2[x] = x2.mul_add(b0[x], p2[x]);
            q1[x] = z1.mul_add(b1[x], q1[x]);
            q2[x] = z2.mul_add(b1[x], q2[x]);
        }
        u += 2;
    }
    if u == b.umax {
        let b0 = &basis[u & 7];
        let (x1, x2) = (t1[u & 7], t2[u & 7]);
        for x in 0..8 {
            p1[x] = x1.mul_add(b0[x], p1[x]);
            p2[x] = x2.mul_add(b0[x], p2[x]);
        }
    }
    let mut out = [[0u8; 8]; 2];
    for x in 0..8 {
        // `as u8` saturates: clamped to 0..=255, truncating the `+ 0.5`.
        out[0][x] = (p1[x] + q1[x]) as u8;
        out[1][x] = (p2[x] + q2[x]) as u8;
    }
    out
}

/// [`idct_pair`] in AVX2 + FMA (the same sums in the same order, one
/// 8-lane vector a row).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn idct_pair_avx2(b: &Block, basis: &[[f32; 8]; 8], y1: usize, y2: usize) -> [[u8; 8]; 2] {
    use std::arch::x86_64::*;
    let (y1, y2) = (y1 & 7, y2 & 7);
    let (vmax, umax) = (b.vmax.min(7), b.umax.min(7));
    // SAFETY (all loads and stores): `v * 8 + 8 <= 64` for `v <= 7`, on
    // arrays of 64 and 8 values.
    let row = |v: usize| _mm256_loadu_ps(b.coef.as_ptr().add(v * 8));
    let (mut t1, mut t2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut s1, mut s2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut v = 0;
    while v < vmax {
        let (r0, r1) = (row(v), row(v + 1));
        t1 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y1]), r0, t1);
        t2 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y2]), r0, t2);
        s1 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v + 1][y1]), r1, s1);
        s2 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v + 1][y2]), r1, s2);
        v += 2;
    }
    if v == vmax {
        let r0 = row(v);
        t1 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y1]), r0, t1);
        t2 = _mm256_fmadd_ps(_mm256_set1_ps(basis[v][y2]), r0, t2);
    }
    let (t1, t2) = (_mm256_add_ps(t1, s1), _mm256_add_ps(t2, s2));
    let bas = |u: usize| _mm256_loadu_ps(basis[u].as_ptr());
    let lane = |t: __m256, u: usize| _mm256_permutevar8x32_ps(t, _mm256_set1_epi32(u as i32));
    let (mut p1, mut p2) = (_mm256_set1_ps(128.5), _mm256_set1_ps(128.5));
    let (mut q1, mut q2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut u = 0;
    while u < umax {
        let (b0, b1) = (bas(u), bas(u + 1));
        p1 = _mm256_fmadd_ps(lane(t1, u), b0, p1);
        p2 = _mm256_fmadd_ps(lane(t2, u), b0, p2);
        q1 = _mm256_fmadd_ps(lane(t1, u + 1), b1, q1);
        q2 = _mm256_fmadd_ps(lane(t2, u + 1), b1, q2);
        u += 2;
    }
    if u == umax {
        let b0 = bas(u);
        p1 = _mm256_fmadd_ps(lane(t1, u), b0, p1);
        p2 = _mm256_fmadd_ps(lane(t2, u), b0, p2);
    }
    let clamp = |p: __m256| {
        let p = _mm256_min_ps(_mm256_max_ps(p, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
        _mm256_cvttps_epi32(p)
    };
    // 8 + 8 values to 16 bytes: packed to u16 by 128-bit lanes (row 1's
    // low half, row 2's, row 1's high half, row 2's), reordered, packed
    // to u8.
    let w = _mm256_packus_epi32(clamp(_mm256_add_ps(p1, q1)), clamp(_mm256_add_ps(p2, q2)));
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
    let bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
    let mut out = [[0u8; 8]; 2];
    _mm_storeu_si128(out.as_mut_ptr().cast(), bytes);
    out
}

/// [`idct_pair`], in AVX2 + FMA with `SIMD` (which only the caller that
/// detected those features passes).
#[inline(always)]
fn idct_pairs<const SIMD: bool>(
    b: &Block,
    basis: &[[f32; 8]; 8],
    y1: usize,
    y2: usize,
) -> [[u8; 8]; 2] {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: `SIMD` is true only under `decode_frame`'s detection of
        // AVX2 and FMA.
        return unsafe { idct_pair_avx2(b, basis, y1, y2) };
    }
    idct_pair(b, basis, y1, y2)
}

/// A component of the frame.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    td: usize,
    ta: usize,
}

/// What the headers say, up to the scan's first byte.
struct Frame {
    width: usize,
    height: usize,
    comps: [Component; 3],
    quant: [[f32; 64]; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart: usize,
    scan: usize,
}

fn be16(d: &[u8], at: usize) -> Result<usize, Declined> {
    let b = d.get(at..at + 2).ok_or(())?;
    Ok(usize::from(b[0]) << 8 | usize::from(b[1]))
}

/// Reads the headers up to the first scan; `Err` for any kind this path
/// does not take, or a malformed header.
fn parse(d: &[u8]) -> Result<Frame, Declined> {
    if d.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(());
    }
    let mut pos = 2;
    let mut quant = [[0.0f32; 64]; 4];
    let mut have_q = [false; 4];
    let (mut dc, mut ac): ([Option<Huffman>; 4], [Option<Huffman>; 4]) = Default::default();
    let mut frame: Option<(usize, usize, [Component; 3])> = None;
    let mut restart = 0;
    loop {
        if *d.get(pos).ok_or(())? != 0xFF {
            return Err(());
        }
        while d.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let m = *d.get(pos).ok_or(())?;
        pos += 1;
        let len = be16(d, pos)?;
        let seg = d.get(pos + 2..pos + len).ok_or(())?;
        if len < 2 {
            return Err(());
        }
        match m {
            // DQT
            0xDB => {
                let mut s = seg;
                while !s.is_empty() {
                    let (p, t) = (s[0] >> 4, usize::from(s[0] & 15));
                    if t > 3 || p > 1 {
                        return Err(());
                    }
                    let n = if p == 0 { 64 } else { 128 };
                    let vals = s.get(1..1 + n).ok_or(())?;
                    for k in 0..64 {
                        quant[t][k] = if p == 0 {
                            f32::from(vals[k])
                        } else {
                            f32::from(u16::from(vals[2 * k]) << 8 | u16::from(vals[2 * k + 1]))
                        };
                    }
                    have_q[t] = true;
                    s = &s[1 + n..];
                }
            }
            // DHT
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    let (class, t) = (s[0] >> 4, usize::from(s[0] & 15));
                    if class > 1 || t > 3 {
                        return Err(());
                    }
                    let counts: &[u8; 16] = s.get(1..17).ok_or(())?.try_into().map_err(|_| ())?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    if total > 256 {
                        return Err(());
                    }
                    let values = s.get(17..17 + total).ok_or(())?;
                    let table = Huffman::new(counts, values, class == 1).ok_or(())?;
                    if class == 0 {
                        dc[t] = Some(table);
                    } else {
                        ac[t] = Some(table);
                    }
                    s = &s[17 + total..];
                }
            }
            // SOF0, SOF1: baseline / extended sequential, Huffman.
            0xC0 | 0xC1 => {
                if frame.is_some() || seg.len() < 6 || seg[0] != 8 || seg[5] != 3 {
                    return Err(());
                }
                let (height, width) = (be16(seg, 1)?, be16(seg, 3)?);
                if height == 0 || width == 0 || seg.len() < 6 + 9 {
                    return Err(());
                }
                let mut comps = [Component {
                    id: 0,
                    h: 1,
                    v: 1,
                    tq: 0,
                    td: 0,
                    ta: 0,
                }; 3];
                for (i, c) in comps.iter_mut().enumerate() {
                    let s = &seg[6 + 3 * i..9 + 3 * i];
                    c.id = s[0];
                    (c.h, c.v, c.tq) = (
                        usize::from(s[1] >> 4),
                        usize::from(s[1] & 15),
                        usize::from(s[2]),
                    );
                    if c.tq > 3 {
                        return Err(());
                    }
                }
                // Luma 1x1, 2x1 or 2x2, chroma 1x1; not RGB by its ids.
                let [y, cb, cr] = comps;
                if !matches!((y.h, y.v), (1, 1) | (2, 1) | (2, 2))
                    || (cb.h, cb.v, cr.h, cr.v) != (1, 1, 1, 1)
                    || (y.id, cb.id, cr.id) == (b'R', b'G', b'B')
                {
                    return Err(());
                }
                frame = Some((width, height, comps));
            }
            // Other frame kinds: progressive, lossless, arithmetic.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Err(()),
            // DRI
            0xDD => restart = be16(seg, 0)?,
            // APP14 "Adobe": its transform flag may say RGB or YCCK.
            0xEE if seg.starts_with(b"Adobe") => return Err(()),
            // SOS
            0xDA => {
                let (width, height, mut comps) = frame.ok_or(())?;
                if seg.len() != 1 + 2 * 3 + 3 || seg[0] != 3 {
                    return Err(());
                }
                for (i, c) in comps.iter_mut().enumerate() {
                    let s = &seg[1 + 2 * i..3 + 2 * i];
                    if s[0] != c.id {
                        return Err(());
                    }
                    (c.td, c.ta) = (usize::from(s[1] >> 4), usize::from(s[1] & 15));
                    if c.td > 3 || c.ta > 3 || !have_q[c.tq] {
                        return Err(());
                    }
                    if dc[c.td].is_none() || ac[c.ta].is_none() {
                        return Err(());
                    }
                }
                if seg[7..] != [0, 63, 0] {
                    return Err(());
                }
                return Ok(Frame {
                    width,
                    height,
                    comps,
                    quant,
                    dc,
                    ac,
                    restart,
                    scan: pos + len,
                });
            }
            // SOI again, EOI, RSTn, TEM: not here.
            0xD8 | 0xD9 | 0xD0..=0xD7 | 0x01 => return Err(()),
            _ => {}
        }
        pos += len;
    }
}

/// For each block (row or column) of 8 pixels, the picks that fall in it:
/// `ranges[b]..ranges[b + 1]` index `picks`, which hold `(offset in the
/// block, output index)`.
struct Picks {
    ranges: Vec<u32>,
    picks: Vec<(u8, u32)>,
}

impl Picks {
    fn new(n_src: usize, n_dst: usize, blocks: usize) -> Picks {
        let mut ranges = vec![0u32; blocks + 1];
        let mut picks = Vec::with_capacity(n_dst);
        for i in 0..n_dst {
            let s = nearest_index(i, n_src, n_dst);
            picks.push(((s & 7) as u8, i as u32));
            ranges[s / 8 + 1] += 1;
        }
        for b in 0..blocks {
            ranges[b + 1] += ranges[b];
        }
        Picks { ranges, picks }
    }

    #[inline(always)]
    fn of(&self, block: usize) -> &[(u8, u32)] {
        &self.picks[self.ranges[block] as usize..self.ranges[block + 1] as usize]
    }
}

/// Keras's nearest resize of the JPEG `bytes` to `th` x `tw`, as YCbCr
/// (3 bytes a pixel, `out` resized to `th * tw * 3`), `scratch` for the
/// picked rows and the chroma planes. `None` when this path does not take
/// the file (see the module's documentation), or the image has more than
/// `max_pixels` pixels: the caller decodes it the full way.
pub(crate) fn decode_nearest(
    bytes: &[u8],
    th: usize,
    tw: usize,
    max_pixels: u64,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Option<(usize, usize)> {
    let f = parse(bytes).ok()?;
    if (f.width as u64).saturating_mul(f.height as u64) > max_pixels || th == 0 || tw == 0 {
        return None;
    }
    decode_frame(bytes, &f, th, tw, out, scratch).ok()?;
    Some((f.height, f.width))
}

/// The inverse DCT's basis, computed once.
fn basis_table() -> &'static [[f32; 8]; 8] {
    static BASIS: std::sync::OnceLock<[[f32; 8]; 8]> = std::sync::OnceLock::new();
    BASIS.get_or_init(basis)
}

/// Decodes the scan's blocks in order, calling `on_block(component, block
/// row, block column, block)` for each: luma blocks in luma block
/// coordinates, chroma blocks in MCU coordinates (1x1 chroma). `Err` for
/// anything wrong in the data, or data that ends early.
#[inline(always)]
fn scan(
    bytes: &[u8],
    f: &Frame,
    mut on_block: impl FnMut(usize, usize, usize, &Block),
) -> Result<(), Declined> {
    let [yc, cbc, crc] = f.comps;
    let (hy, vy) = (yc.h, yc.v);
    let (mcux, mcuy) = (f.width.div_ceil(8 * hy), f.height.div_ceil(8 * vy));
    let tables = |c: &Component| -> Result<(&Huffman, &Huffman, &[f32; 64]), Declined> {
        let dc = f.dc[c.td].as_ref().ok_or(())?;
        let ac = f.ac[c.ta].as_ref().ok_or(())?;
        Ok((dc, ac, &f.quant[c.tq]))
    };
    let t = [tables(&yc)?, tables(&cbc)?, tables(&crc)?];
    let mut bits = Bits::new(bytes, f.scan);
    let mut pred = [0i32; 3];
    let mut block = Block::new();
    let mut next_rst = 0u8;
    for mcu in 0..mcux * mcuy {
        if f.restart > 0 && mcu > 0 && mcu % f.restart == 0 {
            bits.restart(next_rst)?;
            next_rst = (next_rst + 1) & 7;
            pred = [0; 3];
        }
        let (mx, my) = (mcu % mcux, mcu / mcux);
        // Luma blocks, row by row within the MCU.
        let (dc, ac, q) = t[0];
        for v in 0..vy {
            for h in 0..hy {
                decode_block(&mut bits, dc, ac, q, &mut pred[0], &mut block)?;
                on_block(0, my * vy + v, mx * hy + h, &block);
            }
        }
        for ci in 1..3 {
            let (dc, ac, q) = t[ci];
            decode_block(&mut bits, dc, ac, q, &mut pred[ci], &mut block)?;
            on_block(ci, my, mx, &block);
        }
    }
    if bits.overread() {
        return Err(());
    }
    Ok(())
}

/// [`decode_frame_body`] in an AVX2 + FMA build where the CPU has them
/// (whatever the crate was compiled for: `f32::mul_add` is an instruction
/// there), else as compiled.
fn decode_frame(
    bytes: &[u8],
    f: &Frame,
    th: usize,
    tw: usize,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), Declined> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(
            bytes: &[u8],
            f: &Frame,
            th: usize,
            tw: usize,
            out: &mut Vec<u8>,
            scratch: &mut Vec<u8>,
        ) -> Result<(), Declined> {
            decode_frame_body::<true>(bytes, f, th, tw, out, scratch)
        }
        // SAFETY: both features were detected just above.
        return unsafe { fma(bytes, f, th, tw, out, scratch) };
    }
    decode_frame_body::<false>(bytes, f, th, tw, out, scratch)
}

#[inline(always)]
fn decode_frame_body<const SIMD: bool>(
    bytes: &[u8],
    f: &Frame,
    th: usize,
    tw: usize,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), Declined> {
    let [yc, cbc, crc] = f.comps;
    let (hy, vy) = (yc.h, yc.v);
    let (mcux, mcuy) = (f.width.div_ceil(8 * hy), f.height.div_ceil(8 * vy));
    let rows = Picks::new(f.height, th, mcuy * vy);
    // The picked rows at full width (`lw`, whole blocks), per component
    // kept at full resolution: luma, and chroma when not subsampled. Then
    // the chroma planes when subsampled (`pw` x `ph`, one block per MCU).
    let subsampled = (hy, vy) != (1, 1);
    let lw = mcux * hy * 8;
    let (pw, ph) = (mcux * 8, mcuy * 8);
    let full = if subsampled { 1 } else { 3 };
    // Not zeroed again from image to image: every byte read below is
    // written first (each picked row whole, each plane whole).
    let need = full * th * lw + if subsampled { 2 * pw * ph } else { 0 };
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let (picked, planes) = scratch[..need].split_at_mut(full * th * lw);
    let (cb_plane, cr_plane) = planes.split_at_mut(planes.len() / 2);
    // The blocks' loop written out, not `scan` with a closure: that was 4-6%
    // slower here (per image: keras-like 221 against 210 us, photo-like
    // 622 against 603).
    let basis = *basis_table();
    let tables = |c: &Component| -> Result<(&Huffman, &Huffman, &[f32; 64]), Declined> {
        let dc = f.dc[c.td].as_ref().ok_or(())?;
        let ac = f.ac[c.ta].as_ref().ok_or(())?;
        Ok((dc, ac, &f.quant[c.tq]))
    };
    let t = [tables(&yc)?, tables(&cbc)?, tables(&crc)?];
    let mut bits = Bits::new(bytes, f.scan);
    let mut pred = [0i32; 3];
    let mut block = Block::new();
    let mut next_rst = 0u8;
    for mcu in 0..mcux * mcuy {
        if f.restart > 0 && mcu > 0 && mcu % f.restart == 0 {
            bits.restart(next_rst)?;
            next_rst = (next_rst + 1) & 7;
            pred = [0; 3];
        }
        let (mx, my) = (mcu % mcux, mcu / mcux);
        // Luma blocks, row by row within the MCU.
        let (dc, ac, q) = t[0];
        for v in 0..vy {
            for h in 0..hy {
                decode_block(&mut bits, dc, ac, q, &mut pred[0], &mut block)?;
                pick_rows::<SIMD>(
                    &block,
                    &basis,
                    rows.of(my * vy + v),
                    (mx * hy + h) * 8,
                    lw,
                    picked,
                );
            }
        }
        for ci in 1..3 {
            let (dc, ac, q) = t[ci];
            decode_block(&mut bits, dc, ac, q, &mut pred[ci], &mut block)?;
            if !subsampled {
                let at = ci * th * lw;
                pick_rows::<SIMD>(
                    &block,
                    &basis,
                    rows.of(my),
                    mx * 8,
                    lw,
                    &mut picked[at..at + th * lw],
                );
                continue;
            }
            let plane = if ci == 1 {
                &mut *cb_plane
            } else {
                &mut *cr_plane
            };
            let mut rows8 = [[0u8; 8]; 8];
            idct_rows::<SIMD>(&block, &basis, &[0, 1, 2, 3, 4, 5, 6, 7], &mut rows8);
            for (y, r) in rows8.iter().enumerate() {
                let at = (my * 8 + y) * pw + mx * 8;
                plane[at..at + 8].copy_from_slice(r);
            }
        }
    }
    if bits.overread() {
        return Err(());
    }
    if out.len() != th * tw * 3 {
        out.resize(th * tw * 3, 0);
    }
    let xs: Vec<usize> = (0..tw).map(|j| nearest_index(j, f.width, tw)).collect();
    for (ch, rows) in picked.chunks_exact(th * lw).enumerate() {
        for (o, row) in out.chunks_exact_mut(tw * 3).zip(rows.chunks_exact(lw)) {
            for (o, &x) in o.chunks_exact_mut(3).zip(&xs) {
                o[ch] = row[x];
            }
        }
    }
    if subsampled {
        upsample_picks(f, th, tw, (pw, ph), cb_plane, cr_plane, out);
    }
    Ok(())
}

/// Writes the rows of the block that the resize picks (`picks`: offset in
/// the block, output row), 8 pixels from column `x0`, into `buf` (rows of
/// `lw`).
#[inline(always)]
fn pick_rows<const SIMD: bool>(
    b: &Block,
    basis: &[[f32; 8]; 8],
    picks: &[(u8, u32)],
    x0: usize,
    lw: usize,
    buf: &mut [u8],
) {
    let Some(&(first, _)) = picks.first() else {
        return;
    };
    let mut vals = [[0u8; 8]; 8];
    if b.umax == 0 && b.vmax == 0 {
        let v = (b.coef[0] / 8.0 + 128.5).max(0.0) as u8;
        for &(_, i) in picks {
            buf[i as usize * lw + x0..][..8].fill(v);
        }
        return;
    }
    // The distinct rows picked (ascending, as the output rows are), two
    // at a time.
    let mut ys = [usize::from(first); 8];
    let mut n = 1;
    for &(py, _) in picks {
        let py = usize::from(py);
        if ys[(n - 1) & 7] != py && n < 8 {
            ys[n] = py;
            n += 1;
        }
    }
    // (A few rows of a block: each row straight from the coefficients,
    // two at a time, costs less than `idct_rows`'s first pass.)
    for k in (0..n).step_by(2) {
        let (a, c) = (ys[k], ys[(k + 1).min(n - 1)]);
        let pair = idct_pairs::<SIMD>(b, basis, a, c);
        (vals[a & 7], vals[c & 7]) = (pair[0], pair[1]);
    }
    for &(py, i) in picks {
        buf[i as usize * lw + x0..][..8].copy_from_slice(&vals[usize::from(py) & 7]);
    }
}

/// The chroma values at the picked pixels, upsampled as zune-jpeg does:
/// vertically `(3 near + far + 2) >> 2` (the row above for the upper
/// output row of a chroma row, the one below for the lower), then the same
/// horizontally; neighbours past the plane's edges are the edge itself.
#[inline(always)]
fn upsample_picks(
    f: &Frame,
    th: usize,
    tw: usize,
    (pw, ph): (usize, usize),
    cb: &[u8],
    cr: &[u8],
    out: &mut [u8],
) {
    let (hy, vy) = (f.comps[0].h, f.comps[0].v);
    // For each picked column: the chroma column, and its far neighbour.
    let xs: Vec<(usize, usize)> = (0..tw)
        .map(|j| {
            let x = nearest_index(j, f.width, tw);
            if hy == 1 {
                return (x, x);
            }
            let c = x / 2;
            let far = if x & 1 == 0 {
                c.saturating_sub(1)
            } else {
                (c + 1).min(pw - 1)
            };
            (c, far)
        })
        .collect();
    // The vertically filtered chroma rows of the last picked row pair.
    let mut vert = [vec![0u16; pw], vec![0u16; pw]];
    let mut have = (usize::MAX, usize::MAX);
    for i in 0..th {
        let y = nearest_index(i, f.height, th);
        let (r, rf) = if vy == 1 {
            (y, y)
        } else {
            let r = y / 2;
            (
                r,
                if y & 1 == 0 {
                    r.saturating_sub(1)
                } else {
                    (r + 1).min(ph - 1)
                },
            )
        };
        if have != (r, rf) {
            have = (r, rf);
            for (v, plane) in vert.iter_mut().zip([cb, cr]) {
                let (near, far) = (&plane[r * pw..(r + 1) * pw], &plane[rf * pw..(rf + 1) * pw]);
                if vy == 1 {
                    v.iter_mut().zip(near).for_each(|(v, &n)| *v = u16::from(n));
                } else {
                    for ((v, &n), &f) in v.iter_mut().zip(near).zip(far) {
                        *v = (3 * u16::from(n) + u16::from(f) + 2) >> 2;
                    }
                }
            }
        }
        let o = &mut out[i * tw * 3..(i + 1) * tw * 3];
        let [vb, vr] = &vert;
        for (o, &(c, far)) in o.chunks_exact_mut(3).zip(&xs) {
            if hy == 1 {
                o[1] = vb[c] as u8;
                o[2] = vr[c] as u8;
            } else {
                o[1] = ((3 * vb[c] + vb[far] + 2) >> 2) as u8;
                o[2] = ((3 * vr[c] + vr[far] + 2) >> 2) as u8;
            }
        }
    }
}

/// The whole image of the JPEG `bytes` in YCbCr, interleaved (`out`, `h *
/// w * 3` bytes, as zune-jpeg's YCbCr output: chroma upsampled by its
/// filter), `scratch` for the planes; `(h, w)`, or `None` where
/// [`decode_nearest`] declines. For the augmenting path, which samples
/// the whole image.
pub(crate) fn decode_full(
    bytes: &[u8],
    max_pixels: u64,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Option<(usize, usize)> {
    let f = parse(bytes).ok()?;
    if (f.width as u64).saturating_mul(f.height as u64) > max_pixels {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(
            b: &[u8],
            f: &Frame,
            o: &mut Vec<u8>,
            s: &mut Vec<u8>,
        ) -> Result<(), Declined> {
            full_body::<true>(b, f, o, s)
        }
        // SAFETY: both features were detected just above.
        unsafe { fma(bytes, &f, out, scratch) }.ok()?;
        return Some((f.height, f.width));
    }
    full_body::<false>(bytes, &f, out, scratch).ok()?;
    Some((f.height, f.width))
}

#[inline(always)]
fn full_body<const SIMD: bool>(
    bytes: &[u8],
    f: &Frame,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), Declined> {
    let (hy, vy) = (f.comps[0].h, f.comps[0].v);
    let (mcux, mcuy) = (f.width.div_ceil(8 * hy), f.height.div_ceil(8 * vy));
    // Planes of whole blocks: luma `lw` x `lh`, chroma `pw` x `ph`.
    let (lw, lh) = (mcux * hy * 8, mcuy * vy * 8);
    let (pw, ph) = (mcux * 8, mcuy * 8);
    let need = lw * lh + 2 * pw * ph;
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let (luma, chroma) = scratch[..need].split_at_mut(lw * lh);
    let (cb, cr) = chroma.split_at_mut(pw * ph);
    let basis = *basis_table();
    let all = [0, 1, 2, 3, 4, 5, 6, 7];
    scan(bytes, f, |ci, by, bx, block| {
        let (plane, stride) = match ci {
            0 => (&mut *luma, lw),
            1 => (&mut *cb, pw),
            _ => (&mut *cr, pw),
        };
        let mut rows8 = [[0u8; 8]; 8];
        idct_rows::<SIMD>(block, &basis, &all, &mut rows8);
        for (y, r) in rows8.iter().enumerate() {
            let at = (by * 8 + y) * stride + bx * 8;
            plane[at..at + 8].copy_from_slice(r);
        }
    })?;
    let (h, w) = (f.height, f.width);
    if out.len() != h * w * 3 {
        out.resize(h * w * 3, 0);
    }
    // Per output row: chroma filtered vertically (the row above for the
    // upper of a chroma row's two rows, the one below for the lower), then
    // horizontally at each pixel; interleaved with luma.
    let mut vert = [vec![0u16; pw], vec![0u16; pw]];
    let mut horiz = [vec![0u8; lw], vec![0u8; lw]];
    for (y, o) in out.chunks_exact_mut(w * 3).enumerate() {
        let (r, rf) = if vy == 1 {
            (y, y)
        } else {
            let r = y / 2;
            (
                r,
                if y & 1 == 0 {
                    r.saturating_sub(1)
                } else {
                    (r + 1).min(ph - 1)
                },
            )
        };
        for ((v, hz), plane) in vert.iter_mut().zip(horiz.iter_mut()).zip([&*cb, &*cr]) {
            let (near, far) = (&plane[r * pw..(r + 1) * pw], &plane[rf * pw..(rf + 1) * pw]);
            for ((v, &n), &fa) in v.iter_mut().zip(near).zip(far) {
                *v = (3 * u16::from(n) + u16::from(fa) + 2) >> 2;
            }
            if hy == 1 {
                for (h, &v) in hz.iter_mut().zip(v.iter()) {
                    *h = v as u8;
                }
                continue;
            }
            // Even outputs lean on the left neighbour, odd on the right;
            // the plane's edges repeat.
            let edge = |c: usize, hz: &mut [u8]| {
                let (l, m, rr) = (v[c.saturating_sub(1)], v[c], v[(c + 1).min(pw - 1)]);
                hz[2 * c] = ((3 * m + l + 2) >> 2) as u8;
                hz[2 * c + 1] = ((3 * m + rr + 2) >> 2) as u8;
            };
            edge(0, hz);
            edge(pw - 1, hz);
            if pw > 2 {
                let (l, m, rr) = (&v[..pw - 2], &v[1..pw - 1], &v[2..]);
                let inner = hz[2..2 * pw - 2].chunks_exact_mut(2);
                for (((h, &l), &m), &rr) in inner.zip(l).zip(m).zip(rr) {
                    h[0] = ((3 * m + l + 2) >> 2) as u8;
                    h[1] = ((3 * m + rr + 2) >> 2) as u8;
                }
            }
        }
        let yrow = &luma[y * lw..y * lw + w];
        for (((o, &yv), &b), &rv) in o
            .chunks_exact_mut(3)
            .zip(yrow)
            .zip(&horiz[0])
            .zip(&horiz[1])
        {
            o[0] = yv;
            o[1] = b;
            o[2] = rv;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// zune-jpeg's full decode to YCbCr, then the nearest pick.
    fn reference(bytes: &[u8], th: usize, tw: usize) -> (Vec<u8>, usize, usize) {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let o = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), o);
        let full = d.decode().unwrap();
        let (w, h) = d.dimensions().unwrap();
        let mut out = vec![0u8; th * tw * 3];
        for i in 0..th {
            let y = nearest_index(i, h, th);
            for j in 0..tw {
                let x = nearest_index(j, w, tw);
                out[(i * tw + j) * 3..][..3].copy_from_slice(&full[(y * w + x) * 3..][..3]);
            }
        }
        (out, h, w)
    }

    /// A JPEG of `h` x `w` from the `image` crate's encoder (4:2:0):
    /// gradients, edges and noise, so that blocks have high frequencies.
    fn encoded(h: usize, w: usize, quality: u8, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 64) as i32 - 32
        };
        let mut px = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for x in 0..w {
                let edge = if (x / 5 + y / 7) % 2 == 0 { 60 } else { -60 };
                for c in 0..3 {
                    let g = (x * 255 / w.max(1)) as i32 * (c + 1) / 3
                        + (y * 200 / h.max(1)) as i32 / (c + 1);
                    px.push((g + edge + noise()).clamp(0, 255) as u8);
                }
            }
        }
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
            .encode(&px, w as u32, h as u32, image::ExtendedColorType::Rgb8)
            .unwrap();
        bytes
    }

    /// Every picked Y, Cb, Cr within 1 level of the full decode's.
    /// Both builds: the one `decode_nearest` picks, and the plain one.
    fn check(bytes: &[u8], th: usize, tw: usize, what: &str) {
        let (mut got, mut scratch) = (Vec::new(), Vec::new());
        let size = decode_nearest(bytes, th, tw, u64::MAX, &mut got, &mut scratch);
        check_against_zune(bytes, th, tw, size, &got, what);
        let f = parse(bytes).unwrap();
        let r = decode_frame_body::<false>(bytes, &f, th, tw, &mut got, &mut scratch);
        let size = r.ok().map(|()| (f.height, f.width));
        check_against_zune(bytes, th, tw, size, &got, &format!("{what} (plain)"));
    }

    fn check_against_zune(
        bytes: &[u8],
        th: usize,
        tw: usize,
        size: Option<(usize, usize)>,
        got: &[u8],
        what: &str,
    ) {
        let (want, h, w) = reference(bytes, th, tw);
        assert_eq!(size, Some((h, w)), "{what}: declined");
        let mut off = 0;
        for (k, (&a, &b)) in got.iter().zip(&want).enumerate() {
            let d = (i32::from(a) - i32::from(b)).abs();
            assert!(
                d <= 1,
                "{what}: value {k} (pixel {}, channel {}): {a} against {b}",
                k / 3,
                k % 3
            );
            off += usize::from(d > 0);
        }
        // Off by one only where the two inverse DCTs round apart: rarely.
        assert!(
            off * 20 <= got.len(),
            "{what}: {off} of {} values differ",
            got.len()
        );
    }

    #[test]
    fn picks_match_the_full_decode() {
        let sizes = [
            (1, 1),
            (7, 9),
            (8, 8),
            (16, 16),
            (17, 33),
            (40, 23),
            (150, 150),
            (151, 233),
            (375, 500),
        ];
        for (n, &(h, w)) in sizes.iter().enumerate() {
            for quality in [40, 90] {
                let bytes = encoded(h, w, quality, n as u32);
                for (th, tw) in [(150, 150), (1, 1), (7, 300), (300, 7), (h, w)] {
                    check(&bytes, th, tw, &format!("{h}x{w} q{quality} -> {th}x{tw}"));
                }
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// libjpeg's files (Pillow's, `tests/fixtures/jpeg/make_fixtures.py`):
    /// each subsampling taken, restart markers, optimised tables.
    #[test]
    fn picks_match_the_full_decode_of_libjpeg_files() {
        for name in [
            "s444.jpg",
            "s422.jpg",
            "s420.jpg",
            "s420_wide.jpg",
            "s422_rst.jpg",
            "s420_rst_rows.jpg",
            "s420_even.jpg",
            "s422_even.jpg",
        ] {
            let bytes = fixture(name);
            let f = parse(&bytes).unwrap_or_else(|_| panic!("{name}: not taken"));
            let (h, w) = (f.height, f.width);
            for (th, tw) in [
                (150, 150),
                (h, w),
                (h / 3, w / 2),
                (1, 1),
                (2 * h + 1, 3 * w - 1),
            ] {
                check(&bytes, th, tw, &format!("{name} -> {th}x{tw}"));
            }
        }
    }

    /// The whole image: zune-jpeg's YCbCr output within 1 level, in both
    /// builds, for libjpeg's files and the `image` crate's.
    #[test]
    fn whole_images_match_zune() {
        let mut files: Vec<(String, Vec<u8>)> = [
            "s444.jpg",
            "s422.jpg",
            "s420.jpg",
            "s420_wide.jpg",
            "s422_rst.jpg",
            "s420_rst_rows.jpg",
            "s420_even.jpg",
            "s422_even.jpg",
        ]
        .iter()
        .map(|n| (n.to_string(), fixture(n)))
        .collect();
        for (h, w) in [(1, 1), (7, 9), (17, 33), (151, 233)] {
            files.push((format!("image {h}x{w}"), encoded(h, w, 70, 3)));
        }
        let (mut got, mut scratch) = (Vec::new(), Vec::new());
        for (name, bytes) in &files {
            let want = zune_ycbcr(bytes);
            let size = decode_full(bytes, u64::MAX, &mut got, &mut scratch);
            assert!(size.is_some(), "{name}: declined");
            close(&got, &want, name);
            let f = parse(bytes).unwrap();
            full_body::<false>(bytes, &f, &mut got, &mut scratch).unwrap();
            close(&got, &want, &format!("{name} (plain)"));
        }
        // Never taken where zune-jpeg refuses the data.
        let bytes = fixture("s420.jpg");
        for len in 0..bytes.len() {
            if decode_full(&bytes[..len], u64::MAX, &mut got, &mut scratch).is_some() {
                assert!(zune_strict_ok(&bytes[..len]), "cut to {len}: taken");
            }
        }
        assert_eq!(
            decode_full(
                &fixture("progressive.jpg"),
                u64::MAX,
                &mut got,
                &mut scratch
            ),
            None
        );
        assert_eq!(decode_full(&bytes, 100, &mut got, &mut scratch), None);
    }

    fn zune_ycbcr(bytes: &[u8]) -> Vec<u8> {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let o = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), o)
            .decode()
            .unwrap()
    }

    fn close(got: &[u8], want: &[u8], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: size");
        let mut off = 0;
        for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
            let d = (i32::from(a) - i32::from(b)).abs();
            assert!(d <= 1, "{what}: value {k}: {a} against {b}");
            off += usize::from(d > 0);
        }
        assert!(
            off * 20 <= got.len(),
            "{what}: {off} of {} values differ",
            got.len()
        );
    }

    /// Kinds left to the full decoder, and data that ends early: `None`.
    #[test]
    fn declines_other_kinds_and_truncated_data() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for name in ["progressive.jpg", "gray.jpg"] {
            assert_eq!(
                decode_nearest(&fixture(name), 150, 150, u64::MAX, &mut out, &mut scratch),
                None,
                "{name}"
            );
        }
        for name in ["s420.jpg", "s422_rst.jpg"] {
            let bytes = fixture(name);
            assert!(decode_nearest(&bytes, 150, 150, u64::MAX, &mut out, &mut scratch).is_some());
            // Over the pixel limit: left to the full decoder's error.
            assert_eq!(
                decode_nearest(&bytes, 150, 150, 100, &mut out, &mut scratch),
                None
            );
            // Cut anywhere: never taken where the full decoder (strict, as
            // `decode_jpeg_into` first tries it) refuses the data.
            for len in 0..bytes.len() {
                let cut = &bytes[..len];
                if decode_nearest(cut, 150, 150, u64::MAX, &mut out, &mut scratch).is_some() {
                    assert!(
                        zune_strict_ok(cut),
                        "{name} cut to {len} of {} bytes: taken",
                        bytes.len()
                    );
                }
            }
            // Well before the end: declined.
            for len in (0..bytes.len() - 16).step_by(7) {
                let got = decode_nearest(&bytes[..len], 150, 150, u64::MAX, &mut out, &mut scratch);
                assert_eq!(got, None, "{name} cut to {len} of {} bytes", bytes.len());
            }
        }
        // The data ending at a marker zune-jpeg does not know (EOI made
        // APP5): refused there, declined here.
        let mut bytes = fixture("s420.jpg");
        let end = bytes.len() - 1;
        assert_eq!(bytes[end - 1..], [0xFF, 0xD9]);
        bytes[end] = 0xE5;
        assert!(!zune_strict_ok(&bytes));
        assert_eq!(
            decode_nearest(&bytes, 150, 150, u64::MAX, &mut out, &mut scratch),
            None
        );
        assert_eq!(decode_full(&bytes, u64::MAX, &mut out, &mut scratch), None);
        // A restart marker out of sequence: declined.
        let mut bytes = fixture("s422_rst.jpg");
        let at = bytes.windows(2).position(|w| w == [0xFF, 0xD1]).unwrap();
        bytes[at + 1] = 0xD3;
        assert_eq!(
            decode_nearest(&bytes, 150, 150, u64::MAX, &mut out, &mut scratch),
            None
        );
    }

    fn zune_strict_ok(bytes: &[u8]) -> bool {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let o = DecoderOptions::default().set_strict_mode(true);
        zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), o)
            .decode()
            .is_ok()
    }

    /// Tables libjpeg and zune-jpeg refuse: a code of all ones, DC sizes
    /// over 15, more codes than a length holds.
    #[test]
    fn huffman_tables_are_checked_as_zune_does() {
        let mut counts = [0u8; 16];
        counts[1] = 3; // 00, 01, 10
        assert!(Huffman::new(&counts, &[1, 2, 3], false).is_some());
        counts[1] = 4; // ... and 11, all ones
        assert!(Huffman::new(&counts, &[1, 2, 3, 4], false).is_none());
        counts[1] = 5;
        assert!(Huffman::new(&counts, &[1, 2, 3, 4, 5], true).is_none());
        counts[1] = 3;
        assert!(Huffman::new(&counts, &[1, 2, 16], false).is_none());
        assert!(Huffman::new(&counts, &[1, 2, 16], true).is_some());
    }

    /// Damaged files (bits flipped, bytes changed, dropped or inserted,
    /// over every fixture taken): never a panic, and never taken where
    /// zune-jpeg (strict, as `decode_jpeg_into` first tries it) refuses
    /// the data. (40,000 rounds found none; 33 before the Huffman tables
    /// were checked as zune-jpeg checks them, 2 before unknown markers.)
    #[test]
    fn damaged_data_never_taken_where_zune_refuses() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let names = [
            "s444.jpg",
            "s422.jpg",
            "s420.jpg",
            "s420_wide.jpg",
            "s422_rst.jpg",
            "s420_rst_rows.jpg",
            "s420_even.jpg",
            "s422_even.jpg",
        ];
        let files: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
        let mut state = 987_654_321u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut taken = 0;
        for round in 0..4000 {
            let mut b = files[round % files.len()].clone();
            for _ in 0..1 + next() % 6 {
                let r = next();
                let at = r as usize % b.len();
                match r % 4 {
                    0 => b[at] ^= 1 << (next() % 8),
                    1 => b[at] = next() as u8,
                    2 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, next() as u8),
                }
            }
            let (th, tw) = (1 + next() as usize % 200, 1 + next() as usize % 200);
            let picked = decode_nearest(&b, th, tw, 1 << 22, &mut out, &mut scratch).is_some();
            let whole = decode_full(&b, 1 << 22, &mut out, &mut scratch).is_some();
            if picked || whole {
                taken += 1;
                assert!(
                    zune_strict_ok(&b),
                    "round {round}: taken ({picked}, {whole})"
                );
            }
        }
        // Damage in headers' padding or in data that still decodes.
        assert!(taken > 100, "{taken}");
    }

    fn zune_into(bytes: &[u8], buf: &mut Vec<u8>) {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;
        let o = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), o);
        d.decode_headers().unwrap();
        let n = d.output_buffer_size().unwrap();
        buf.resize(n, 0);
        d.decode_into(&mut buf[..n]).unwrap();
    }

    fn timing(dir: &Path) {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.truncate(200);
        let data: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let (mut out, mut planes, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let (mut zune, mut ours, mut full) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..15 {
            let t = std::time::Instant::now();
            for d in &data {
                zune_into(d, &mut buf);
            }
            zune = zune.min(t.elapsed().as_secs_f64() / data.len() as f64 * 1e6);
            let t = std::time::Instant::now();
            for d in &data {
                decode_nearest(d, 150, 150, u64::MAX, &mut out, &mut planes).unwrap();
            }
            ours = ours.min(t.elapsed().as_secs_f64() / data.len() as f64 * 1e6);
            let t = std::time::Instant::now();
            for d in &data {
                decode_full(d, u64::MAX, &mut out, &mut planes).unwrap();
            }
            full = full.min(t.elapsed().as_secs_f64() / data.len() as f64 * 1e6);
        }
        eprintln!(
            "{}: zune decode {zune:.0} us, sampled {ours:.0} us, whole {full:.0} us (min)",
            dir.display()
        );
    }

    #[test]
    #[ignore = "timing; run with --ignored --nocapture after `cargo xtask bench data`"]
    fn sampled_decode_us_per_image() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
        timing(&root.join("keras-like/train/cats"));
        timing(&root.join("photo-like/train/cats"));
    }
}
