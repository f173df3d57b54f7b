//! Roaring bitmaps read in place from their portable bytes, and the set
//! operations audience evaluation does on them one container at a time.
//!
//! A [`Frozen`] bitmap is the standard portable roaring format (the bytes of
//! a tag file, or a bitmap serialized once) with a directory of its
//! containers: a key (the high 16 bits of the users in it) and where its
//! array, bitmap or run container lies. Nothing is copied out of a memory
//! map to read one, and nothing is allocated per container.
//!
//! A [`Block`] is one key's worth of users being computed: either 1024
//! words of bits or a sorted list of the low 16 bits. An audience is
//! evaluated key by key into blocks that stay in the CPU's cache, each
//! operand container read once, instead of building a whole bitmap for every
//! step of the expression.

use bytes::Bytes;
use multiversion::multiversion;
use roaring::RoaringBitmap;

/// Words in a bitmap container: 2^16 bits.
pub const WORDS: usize = 1024;
/// Bytes of a bitmap container.
const BITMAP_BYTES: usize = WORDS * 8;
/// The most values an array container holds.
const ARRAY_MAX: u32 = 4096;
const COOKIE_NO_RUNS: u32 = 12346;
const COOKIE_RUNS: u16 = 12347;

/// A portable roaring bitmap and the directory of its containers.
#[derive(Debug, Clone)]
pub struct Frozen {
    bytes: Bytes,
    slots: Vec<Slot>,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u16,
    kind: Kind,
    /// Where the container's data starts (past a run container's count).
    start: u32,
    /// Values (array, bitmap) or runs (run).
    count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Array,
    Bitmap,
    Run,
}

/// One container of a [`Frozen`] bitmap, as little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub enum Container<'a> {
    /// Sorted `u16` values.
    Array(&'a [u8]),
    /// 1024 `u64` words.
    Bitmap(&'a [u8]),
    /// `(start, length − 1)` pairs of `u16`.
    Run(&'a [u8]),
}

impl Frozen {
    /// Reads the directory of portable roaring `bytes`, checking that every
    /// container lies within them and keys ascend.
    pub fn parse(bytes: Bytes) -> Result<Frozen, String> {
        let b = &bytes[..];
        let u16_at = |at: usize| -> Result<u16, String> {
            b.get(at..at + 2)
                .map(|s| u16::from_le_bytes([s[0], s[1]]))
                .ok_or_else(|| "the bitmap is cut short".to_string())
        };
        let u32_at = |at: usize| -> Result<u32, String> {
            b.get(at..at + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or_else(|| "the bitmap is cut short".to_string())
        };
        let cookie = u32_at(0)?;
        let (n, run_flags, mut at) = if cookie == COOKIE_NO_RUNS {
            (u32_at(4)? as usize, None, 8)
        } else if cookie as u16 == COOKIE_RUNS {
            let n = (cookie >> 16) as usize + 1;
            let flags = b
                .get(4..4 + n.div_ceil(8))
                .ok_or_else(|| "the bitmap is cut short".to_string())?;
            (n, Some(flags), 4 + n.div_ceil(8))
        } else {
            return Err(format!("unknown roaring cookie {cookie}"));
        };
        if n > 1 << 16 {
            return Err(format!("{n} containers, more than 65536"));
        }
        let descriptions = at;
        at += 4 * n;
        // Offsets are written without runs, and with runs from 4 containers.
        let has_offsets = run_flags.is_none() || n >= 4;
        if has_offsets {
            at += 4 * n;
        }
        let mut slots = Vec::with_capacity(n);
        let mut len = 0;
        for i in 0..n {
            let key = u16_at(descriptions + 4 * i)?;
            let cardinality = u32::from(u16_at(descriptions + 4 * i + 2)?) + 1;
            if slots.last().is_some_and(|s: &Slot| s.key >= key) {
                return Err("container keys do not ascend".to_string());
            }
            let is_run = run_flags.is_some_and(|f| f[i / 8] & (1 << (i % 8)) != 0);
            let mut start = if has_offsets {
                u32_at(descriptions + 4 * n + 4 * i)? as usize
            } else {
                at
            };
            let (kind, count, size) = if is_run {
                let runs = u32::from(u16_at(start)?);
                start += 2;
                (Kind::Run, runs, 4 * runs as usize)
            } else if cardinality > ARRAY_MAX {
                (Kind::Bitmap, cardinality, BITMAP_BYTES)
            } else {
                (Kind::Array, cardinality, 2 * cardinality as usize)
            };
            if start.checked_add(size).is_none_or(|end| end > b.len()) {
                return Err("a container lies past the end of the bitmap".to_string());
            }
            at = start + size;
            len += u64::from(cardinality);
            slots.push(Slot {
                key,
                kind,
                start: u32::try_from(start).map_err(|_| "a bitmap over 4 GiB".to_string())?,
                count,
            });
        }
        Ok(Frozen { bytes, slots, len })
    }

    /// `bitmap` serialized and read back.
    pub fn from_bitmap(bitmap: &RoaringBitmap) -> Frozen {
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        bitmap
            .serialize_into(&mut bytes)
            .expect("writing to a Vec does not fail");
        Frozen::parse(Bytes::from(bytes)).expect("roaring writes the portable format")
    }

    /// How many users: the sum of the directory's cardinalities.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys of the containers, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots.iter().map(|s| s.key)
    }

    /// The container of `key`, if there is one.
    pub fn container(&self, key: u16) -> Option<Container<'_>> {
        let i = self.slots.binary_search_by_key(&key, |s| s.key).ok()?;
        Some(self.container_at(self.slots[i]))
    }

    fn container_at(&self, slot: Slot) -> Container<'_> {
        let start = slot.start as usize;
        let data = |size: usize| &self.bytes[start..start + size];
        match slot.kind {
            Kind::Array => Container::Array(data(2 * slot.count as usize)),
            Kind::Bitmap => Container::Bitmap(data(BITMAP_BYTES)),
            Kind::Run => Container::Run(data(4 * slot.count as usize)),
        }
    }

    /// One past the highest user its containers can hold (0 when empty).
    pub fn end(&self) -> u64 {
        self.slots
            .last()
            .map_or(0, |s| (u64::from(s.key) + 1) << 16)
    }

    /// Hands each user to `f`, ascending.
    pub fn for_each(&self, mut f: impl FnMut(u32)) {
        for &slot in &self.slots {
            let base = u32::from(slot.key) << 16;
            self.container_at(slot).for_each(|v| f(base | u32::from(v)));
        }
    }
}

impl Container<'_> {
    /// How many values.
    pub fn cardinality(self) -> u64 {
        match self {
            Container::Array(bytes) => (bytes.len() / 2) as u64,
            Container::Bitmap(bytes) => bitmap_len(bytes),
            Container::Run(bytes) => runs(bytes)
                .map(|(start, end)| u64::from(end - start) + 1)
                .sum(),
        }
    }

    /// How many values are also in `other`, read where both lie; `None`
    /// for run containers, which a [`Block`] counts instead.
    pub fn and_len(self, other: Container<'_>) -> Option<u64> {
        let count = |n: usize| Some(n as u64);
        match (self, other) {
            (Container::Bitmap(a), Container::Bitmap(b)) => Some(bitmaps_and_len(a, b)),
            (Container::Array(values), Container::Bitmap(bits))
            | (Container::Bitmap(bits), Container::Array(values)) => count(
                array_values(values)
                    .filter(|&v| bitmap_has(bits, v))
                    .count(),
            ),
            (Container::Array(a), Container::Array(b)) => {
                let mut other = array_values(b).peekable();
                count(array_values(a).filter(|&v| holds(&mut other, v)).count())
            }
            (Container::Run(_), _) | (_, Container::Run(_)) => None,
        }
    }

    /// Hands each value to `f`, ascending.
    pub fn for_each(self, mut f: impl FnMut(u16)) {
        match self {
            Container::Array(bytes) => array_values(bytes).for_each(f),
            Container::Bitmap(bytes) => {
                for (i, word) in bitmap_words(bytes).enumerate() {
                    each_bit(i, word, &mut f);
                }
            }
            Container::Run(bytes) => {
                for (start, end) in runs(bytes) {
                    (start..=end).for_each(&mut f);
                }
            }
        }
    }
}

fn le_u16(pair: &[u8]) -> u16 {
    u16::from_le_bytes([pair[0], pair[1]])
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// The values of an array container.
fn array_values(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes.chunks_exact(2).map(le_u16)
}

/// The words of a bitmap container.
fn bitmap_words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(le_u64)
}

// The counts below are compiled for the CPU features listed too, and run as
// such where the CPU has them (multiversion): `count_ones` is then one
// instruction per word, or AVX2's per four, instead of a dozen.

/// The users of a bitmap container's bytes.
#[multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn bitmap_len(bytes: &[u8]) -> u64 {
    bitmap_words(bytes).map(|w| u64::from(w.count_ones())).sum()
}

/// The users in both of two bitmap containers' bytes.
#[multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn bitmaps_and_len(a: &[u8], b: &[u8]) -> u64 {
    bitmap_words(a)
        .zip(bitmap_words(b))
        .map(|(a, b)| u64::from((a & b).count_ones()))
        .sum()
}

/// The users of a block's words.
#[multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn words_len(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// The users in both a block's words and a bitmap container's bytes.
#[multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt"))]
fn words_and_bitmap_len(words: &[u64], bytes: &[u8]) -> u64 {
    words
        .iter()
        .zip(bitmap_words(bytes))
        .map(|(w, c)| u64::from((w & c).count_ones()))
        .sum()
}

fn bitmap_has(bytes: &[u8], value: u16) -> bool {
    bytes[usize::from(value >> 3)] >> (value & 7) & 1 == 1
}

/// The inclusive ranges of a run container.
fn runs(bytes: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    bytes.chunks_exact(4).map(|run| {
        let start = le_u16(&run[..2]);
        (start, start.saturating_add(le_u16(&run[2..])))
    })
}

/// One key's users being computed.
#[derive(Debug, Clone)]
pub struct Block {
    words: Box<[u64; WORDS]>,
    values: Vec<u16>,
    /// Whether `words` holds the users; `values` (sorted) does otherwise.
    dense: bool,
}

impl Default for Block {
    fn default() -> Block {
        Block {
            words: Box::new([0; WORDS]),
            values: Vec::new(),
            dense: false,
        }
    }
}

impl Block {
    /// No users.
    pub fn clear(&mut self) {
        self.values.clear();
        self.dense = false;
    }

    pub fn is_empty(&self) -> bool {
        if self.dense {
            self.words.iter().all(|&w| w == 0)
        } else {
            self.values.is_empty()
        }
    }

    /// How many users.
    pub fn len(&self) -> u64 {
        if self.dense {
            words_len(self.words.as_slice())
        } else {
            self.values.len() as u64
        }
    }

    /// The users of `container`.
    pub fn set(&mut self, container: Container<'_>) {
        match container {
            Container::Array(bytes) => {
                self.values.clear();
                self.values.extend(array_values(bytes));
                self.dense = false;
            }
            Container::Bitmap(bytes) => {
                for (w, c) in self.words.iter_mut().zip(bitmap_words(bytes)) {
                    *w = c;
                }
                self.dense = true;
            }
            Container::Run(bytes) => {
                self.make_dense(false);
                self.words.fill(0);
                for (start, end) in runs(bytes) {
                    set_range(&mut self.words, start, end);
                }
            }
        }
    }

    /// Switches to words, keeping the users unless `keep` is false.
    fn make_dense(&mut self, keep: bool) {
        if self.dense {
            return;
        }
        self.words.fill(0);
        if keep {
            for &v in &self.values {
                set_bit(&mut self.words, v);
            }
        }
        self.dense = true;
    }

    /// Adds the users of `container`.
    pub fn or(&mut self, container: Container<'_>) {
        self.make_dense(true);
        match container {
            Container::Array(bytes) => {
                for v in array_values(bytes) {
                    set_bit(&mut self.words, v);
                }
            }
            Container::Bitmap(bytes) => {
                for (w, c) in self.words.iter_mut().zip(bitmap_words(bytes)) {
                    *w |= c;
                }
            }
            Container::Run(bytes) => {
                for (start, end) in runs(bytes) {
                    set_range(&mut self.words, start, end);
                }
            }
        }
    }

    /// Keeps only the users also in `container`; `scratch` holds a run
    /// container's bits.
    pub fn and(&mut self, container: Container<'_>, scratch: &mut Block) {
        match (self.dense, container) {
            (true, Container::Bitmap(bytes)) => {
                for (w, c) in self.words.iter_mut().zip(bitmap_words(bytes)) {
                    *w &= c;
                }
            }
            (true, Container::Array(bytes)) => {
                let words = &self.words;
                self.values.clear();
                self.values
                    .extend(array_values(bytes).filter(|&v| has_bit(words, v)));
                self.dense = false;
            }
            (false, Container::Bitmap(bytes)) => {
                self.values.retain(|&v| bitmap_has(bytes, v));
            }
            (false, Container::Array(bytes)) => {
                retain_merged(&mut self.values, array_values(bytes), true);
            }
            (_, Container::Run(_)) => {
                scratch.set(container);
                self.and_block(scratch);
            }
        }
    }

    /// Leaves out the users in `container`.
    pub fn and_not(&mut self, container: Container<'_>, scratch: &mut Block) {
        match (self.dense, container) {
            (true, Container::Bitmap(bytes)) => {
                for (w, c) in self.words.iter_mut().zip(bitmap_words(bytes)) {
                    *w &= !c;
                }
            }
            (true, Container::Array(bytes)) => {
                for v in array_values(bytes) {
                    clear_bit(&mut self.words, v);
                }
            }
            (false, Container::Bitmap(bytes)) => {
                self.values.retain(|&v| !bitmap_has(bytes, v));
            }
            (false, Container::Array(bytes)) => {
                retain_merged(&mut self.values, array_values(bytes), false);
            }
            (_, Container::Run(_)) => {
                scratch.set(container);
                self.and_not_block(scratch);
            }
        }
    }

    /// How many users are also in `container`, this block unchanged.
    pub fn and_len(&self, container: Container<'_>, scratch: &mut Block) -> u64 {
        let count = |n: usize| n as u64;
        match (self.dense, container) {
            (true, Container::Bitmap(bytes)) => words_and_bitmap_len(self.words.as_slice(), bytes),
            (true, Container::Array(bytes)) => count(
                array_values(bytes)
                    .filter(|&v| has_bit(&self.words, v))
                    .count(),
            ),
            (false, Container::Bitmap(bytes)) => count(
                self.values
                    .iter()
                    .filter(|&&v| bitmap_has(bytes, v))
                    .count(),
            ),
            (false, Container::Array(bytes)) => {
                let mut other = array_values(bytes).peekable();
                count(
                    self.values
                        .iter()
                        .filter(|&&v| holds(&mut other, v))
                        .count(),
                )
            }
            (_, Container::Run(_)) => {
                scratch.set(container);
                scratch.and_block(self);
                scratch.len()
            }
        }
    }

    /// Keeps only the users also in `other`.
    pub fn and_block(&mut self, other: &Block) {
        match (self.dense, other.dense) {
            (true, true) => {
                for (w, o) in self.words.iter_mut().zip(other.words.iter()) {
                    *w &= o;
                }
            }
            (true, false) => {
                let words = &self.words;
                self.values.clear();
                self.values
                    .extend(other.values.iter().copied().filter(|&v| has_bit(words, v)));
                self.dense = false;
            }
            (false, true) => self.values.retain(|&v| other.has(v)),
            (false, false) => {
                retain_merged(&mut self.values, other.values.iter().copied(), true);
            }
        }
    }

    /// Leaves out the users in `other`.
    pub fn and_not_block(&mut self, other: &Block) {
        if other.dense {
            if self.dense {
                for (w, o) in self.words.iter_mut().zip(other.words.iter()) {
                    *w &= !o;
                }
            } else {
                self.values.retain(|&v| !other.has(v));
            }
        } else if self.dense {
            for &v in &other.values {
                clear_bit(&mut self.words, v);
            }
        } else {
            retain_merged(&mut self.values, other.values.iter().copied(), false);
        }
    }

    /// Adds the users in `other`.
    pub fn or_block(&mut self, other: &Block) {
        self.make_dense(true);
        if other.dense {
            for (w, o) in self.words.iter_mut().zip(other.words.iter()) {
                *w |= o;
            }
        } else {
            for &v in &other.values {
                set_bit(&mut self.words, v);
            }
        }
    }

    fn has(&self, value: u16) -> bool {
        if self.dense {
            has_bit(&self.words, value)
        } else {
            self.values.binary_search(&value).is_ok()
        }
    }

    /// The users, ascending, into `out` (cleared first).
    pub fn values_into(&self, out: &mut Vec<u16>) {
        out.clear();
        if !self.dense {
            out.extend_from_slice(&self.values);
            return;
        }
        // Branch-free for words with up to four users (an audience of a few
        // percent of users has about one per word): their positions are
        // written whether or not the bits are there, and the writing point
        // moves by the word's count. Only fuller words take the loop.
        let total = self.len() as usize;
        out.resize(total + 4, 0);
        let mut at = 0;
        for (i, &word) in self.words.iter().enumerate() {
            let base = (i * 64) as u16;
            let count = word.count_ones() as usize;
            let mut rest = word;
            for slot in &mut out[at..at + 4] {
                *slot = base.wrapping_add(rest.trailing_zeros() as u16);
                rest &= rest.wrapping_sub(1);
            }
            if count > 4 {
                let mut slot = at + 4;
                while rest != 0 {
                    out[slot] = base + rest.trailing_zeros() as u16;
                    rest &= rest - 1;
                    slot += 1;
                }
            }
            at += count;
        }
        out.truncate(total);
    }

    /// Adds this block's users, as the container of `key`, to `bitmap`
    /// (whose users all lie below `key`'s): as a bitmap container when
    /// there are more than an array container holds, else value by value.
    pub fn append_to(&self, key: u16, bitmap: &mut RoaringBitmap) {
        let base = u32::from(key) << 16;
        // Ascending and above every user already there.
        let mut append = |values: &[u16]| {
            let _ = bitmap.append(values.iter().map(|&v| base | u32::from(v)));
        };
        if !self.dense {
            append(&self.values);
        } else if self.len() > u64::from(ARRAY_MAX) {
            let mut bytes = [0u8; BITMAP_BYTES];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(self.words.iter()) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            *bitmap |= RoaringBitmap::from_lsb0_bytes(base, &bytes);
        } else {
            let mut values = Vec::new();
            self.values_into(&mut values);
            append(&values);
        }
    }
}

/// Hands the values of the set bits of word `index` to `f`, ascending.
fn each_bit(index: usize, mut word: u64, f: &mut impl FnMut(u16)) {
    let base = (index * 64) as u16;
    while word != 0 {
        f(base + word.trailing_zeros() as u16);
        word &= word - 1;
    }
}

fn has_bit(words: &[u64; WORDS], value: u16) -> bool {
    words[usize::from(value >> 6)] >> (value & 63) & 1 == 1
}

fn set_bit(words: &mut [u64; WORDS], value: u16) {
    words[usize::from(value >> 6)] |= 1 << (value & 63);
}

fn clear_bit(words: &mut [u64; WORDS], value: u16) {
    words[usize::from(value >> 6)] &= !(1 << (value & 63));
}

/// Whether the ascending `other`, advanced past every value below `value`,
/// holds `value` (asked with ascending values, this merges two lists).
fn holds(other: &mut std::iter::Peekable<impl Iterator<Item = u16>>, value: u16) -> bool {
    while other.next_if(|&o| o < value).is_some() {}
    other.peek() == Some(&value)
}

/// Keeps the (ascending) `values` that the ascending `other` holds, or with
/// `found` false, those it does not.
fn retain_merged(values: &mut Vec<u16>, other: impl Iterator<Item = u16>, found: bool) {
    let mut other = other.peekable();
    values.retain(|&v| holds(&mut other, v) == found);
}

/// Sets bits `start..=end` of `words`.
fn set_range(words: &mut [u64; WORDS], start: u16, end: u16) {
    let (first, last) = (usize::from(start >> 6), usize::from(end >> 6));
    let head = u64::MAX << (start & 63);
    let tail = u64::MAX >> (63 - (end & 63));
    if first == last {
        words[first] |= head & tail;
        return;
    }
    words[first] |= head;
    for w in &mut words[first + 1..last] {
        *w = u64::MAX;
    }
    words[last] |= tail;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen(values: impl IntoIterator<Item = u32>, optimize: bool) -> Frozen {
        let mut bitmap: RoaringBitmap = values.into_iter().collect();
        if optimize {
            bitmap.optimize();
        }
        Frozen::from_bitmap(&bitmap)
    }

    /// The users of a block as of `key`.
    fn users(block: &Block, key: u16) -> RoaringBitmap {
        let mut bitmap = RoaringBitmap::new();
        block.append_to(key, &mut bitmap);
        bitmap
    }

    fn block(f: &Frozen, key: u16) -> Block {
        let mut b = Block::default();
        match f.container(key) {
            Some(c) => b.set(c),
            None => b.clear(),
        }
        b
    }

    #[test]
    fn the_directory_reads_array_bitmap_and_run_containers() -> Result<(), String> {
        // Key 0: an array; key 1: a bitmap; key 2: a run (after optimize).
        let values: Vec<u32> = (0..100)
            .map(|i| i * 7)
            .chain((0..10_000).map(|i| 65_536 + i * 3))
            .chain(2 * 65_536 + 10..2 * 65_536 + 30_000)
            .collect();
        let f = frozen(values.iter().copied(), true);
        assert_eq!(f.len(), 100 + 10_000 + 29_990);
        assert_eq!(f.keys().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(matches!(f.container(0), Some(Container::Array(_))));
        assert!(matches!(f.container(1), Some(Container::Bitmap(_))));
        assert!(matches!(f.container(2), Some(Container::Run(_))));
        assert!(f.container(3).is_none());
        let mut all = RoaringBitmap::new();
        for key in f.keys() {
            block(&f, key).append_to(key, &mut all);
        }
        assert_eq!(all, values.iter().copied().collect::<RoaringBitmap>());
        let mut each = Vec::new();
        f.for_each(|user| each.push(user));
        assert_eq!(each, values);
        assert_eq!(f.end(), 3 * 65_536);
        assert_eq!(frozen([], true).end(), 0);
        // Without runs, and with fewer than four containers and runs (no
        // offsets), the same.
        let small = frozen((5..9).chain(65_536..65_540), true);
        assert_eq!(small.keys().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(users(&block(&small, 1), 1).len(), 4);
        Ok(())
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let f = frozen((0..10_000).map(|i| i * 13), false);
        let bytes = f.bytes.clone();
        let cut = Frozen::parse(bytes.slice(..bytes.len() - 1)).map(|_| ());
        assert_eq!(
            cut,
            Err("a container lies past the end of the bitmap".to_string())
        );
        let mut wrong = bytes.to_vec();
        wrong[0] = 1;
        assert_eq!(
            Frozen::parse(Bytes::from(wrong)).map(|_| ()),
            Err("unknown roaring cookie 12289".to_string())
        );
        assert_eq!(
            Frozen::parse(Bytes::from_static(&[0x3a, 0x30])).map(|_| ()),
            Err("the bitmap is cut short".to_string())
        );
    }

    /// A block's users as a list, from words of every fullness: empty, one
    /// to four users (written without branching), more, and full.
    #[test]
    fn values_come_out_of_words_of_any_fullness() {
        let shapes: Vec<Vec<u16>> = vec![
            vec![],
            vec![0, 63, 64, 65_535],
            (0..65_536).step_by(16).map(|v| v as u16).collect(),
            (0..65_536).step_by(13).map(|v| v as u16).collect(),
            (0..65_536).step_by(3).map(|v| v as u16).collect(),
            (0..=65_535).collect(),
            (65_000..=65_535).chain([7, 8, 9]).collect(),
        ];
        let mut out = vec![1, 2, 3];
        for mut shape in shapes {
            shape.sort_unstable();
            let f = frozen(shape.iter().map(|&v| u32::from(v)), false);
            let mut b = block(&f, 0);
            b.make_dense(true);
            b.values_into(&mut out);
            assert_eq!(out, shape);
        }
    }

    /// Every operation on every pair of container kinds, and of block
    /// forms, against roaring's own.
    #[test]
    fn block_operations_match_roaring() {
        let shapes: Vec<Vec<u32>> = vec![
            (0..300).map(|i| i * 211 % 65_536).collect(),    // array
            (0..20_000).map(|i| i * 3).collect(),            // bitmap
            (1_000..40_000).chain(50_000..50_010).collect(), // runs
            vec![],
            (0..65_536).collect(),                // full (one run)
            (0..4_096).map(|i| i * 16).collect(), // the largest array
        ];
        let sets: Vec<(RoaringBitmap, Frozen)> = shapes
            .iter()
            .map(|s| {
                let bitmap: RoaringBitmap = s.iter().copied().collect();
                let mut optimized = bitmap.clone();
                optimized.optimize();
                (bitmap, Frozen::from_bitmap(&optimized))
            })
            .collect();
        let mut scratch = Block::default();
        for (a, fa) in &sets {
            for (b, fb) in &sets {
                let start = |dense: bool| {
                    let mut x = block(fa, 0);
                    if dense {
                        x.make_dense(true);
                    }
                    x
                };
                for dense in [false, true] {
                    let c = fb.container(0);
                    let mut x = start(dense);
                    match c {
                        Some(c) => x.and(c, &mut scratch),
                        None => x.clear(),
                    }
                    assert_eq!(users(&x, 0), a & b, "and {dense}");
                    let x = start(dense);
                    let and_len = c.map_or(0, |c| x.and_len(c, &mut scratch));
                    assert_eq!(and_len, (a & b).len(), "and_len {dense}");
                    if let (Some(ca), Some(cb)) = (fa.container(0), c) {
                        assert_eq!(ca.cardinality(), a.len());
                        let runs =
                            matches!(ca, Container::Run(_)) || matches!(cb, Container::Run(_));
                        let pair = if runs { None } else { Some((a & b).len()) };
                        assert_eq!(ca.and_len(cb), pair);
                    }
                    let mut x = start(dense);
                    if let Some(c) = c {
                        x.and_not(c, &mut scratch);
                    }
                    assert_eq!(users(&x, 0), a - b, "and not {dense}");
                    let mut x = start(dense);
                    if let Some(c) = c {
                        x.or(c);
                    }
                    assert_eq!(users(&x, 0), a | b, "or {dense}");
                    for other_dense in [false, true] {
                        let mut y = block(fb, 0);
                        if other_dense {
                            y.make_dense(true);
                        }
                        let mut x = start(dense);
                        x.and_block(&y);
                        assert_eq!(users(&x, 0), a & b);
                        assert_eq!(x.len(), (a & b).len());
                        let mut x = start(dense);
                        x.and_not_block(&y);
                        assert_eq!(users(&x, 0), a - b);
                        let mut x = start(dense);
                        x.or_block(&y);
                        assert_eq!(users(&x, 0), a | b);
                        assert_eq!(x.is_empty(), (a | b).is_empty());
                    }
                }
            }
        }
    }
}
