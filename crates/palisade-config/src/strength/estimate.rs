//! How many guesses would find this key? A minimum-guesses decomposition in
//! the manner of zxcvbn (our own code and pricing, tuned for keys rather than
//! passwords).
//!
//! Every candidate token is priced in bits (log2 of the guesses an attacker
//! spends on it) and the cheapest cut of the key into tokens and random
//! characters wins (dynamic programming over the candidates):
//!
//! | token | bits |
//! | --- | --- |
//! | a random character | log2 of the key's alphabet: 4 in hex, 6 in base64, 5.95 for letters and digits, 6.57 for printable ASCII, up to 8 for raw bytes |
//! | a run of 16+ hex digits, of 8+ decimal digits | 4, 3.32 a character (random, but from a smaller alphabet) |
//! | a dictionary word (73,129 English words, names, places, companies: `words.txt`), forwards or reversed | 16.2, plus case (1 bit for `Capitalised` or `UPPER`, more for mixed), leetspeak (`3l3ph4nt`: which letters and which substitute), reversal (1) |
//! | a key word (`prod`, `jwt`, `signing`, `globex`, `the`... 486 words of configuration keys and frequent English) | 8.9, plus the same |
//! | a word followed by a separator (space, `-`, `_`, `.`...) | the word, plus 2 |
//! | a year 1900–2099 | 7.6 |
//! | a sequence (`abcd`, `9753`, `aaaa`) | the first character, the step, the length |
//! | a keyboard walk of 4+ keys (QWERTY, QWERTZ, AZERTY, Dvorak, keypad) | the first key, each direction, where it turns, shifts, the length |
//! | a copy of an earlier part, 3+ characters, overlapping or not, ignoring case and which separator | where it starts, its length, case changes, separator changes |
//!
//! Every pattern pays 3 more bits (which of 8 kinds of token comes next).
//! Copies find repeated blocks of any period (`Xk9#mQ2$p` × 4,
//! `Name1987!Name1987!`) and near repeats (`blk-blk_BLK`). The estimate is
//! the total, the part carried by random characters, and what as many random
//! characters of the key's alphabet would be worth; `strength` judges it.
//! Only the first 256 bytes are read, so the work is bounded whatever the
//! input.
//!
//! # Speed
//!
//! Release build, one core of the 2-core CI machine (Xeon), the ignored test
//! `estimate_speed` (`cargo test --release -p palisade-config --lib --
//! --ignored estimate_speed --nocapture`):
//!
//! | key | estimate | every rule (`assess`, which also estimates a decoded base64 or hex value) |
//! | --- | --- | --- |
//! | 64 characters of base64 (48 random bytes) | 5.5 µs | 10.4 µs |
//! | 64 random bytes | 3.0 µs | 7.1 µs |
//! | 66 characters of words | 5.1 µs | 5.2 µs |
//!
//! The dictionary is built once, on first use: 16 ms, 170,496 nodes, 1.4 MB. In a
//! debug build everything is about 15 times slower; the 250,000 CSPRNG keys
//! of the crate's tests take about 40 s of CPU.

mod keyboard;
mod words;

use words::Entry;

/// Bytes read: the work is quadratic at worst.
const MAX_LEN: usize = 256;
/// The price of saying which kind of token comes next (one of 8: random
/// character, word, key word, year, sequence, walk, copy, digit run), paid
/// by patterns.
const OVERHEAD: f64 = 3.0;
const MIN_WORD: usize = 3;
const MAX_WORD: usize = 20;
const MIN_WALK: usize = 4;
const MIN_SEQUENCE: usize = 3;
const MIN_COPY: usize = 3;
/// Earlier places tried as the source of a copy.
const MAX_SOURCES: usize = 8;
const MIN_HEX_RUN: usize = 16;
const MIN_DIGIT_RUN: usize = 8;
/// Printable ASCII symbols and space.
const SYMBOLS: f64 = 33.0;
/// Years 1900 to 2099.
const YEARS: f64 = 200.0;
/// What separates the words of a passphrase, and its price after a word:
/// one of the 4 common ones (an attacker tries space, `-`, `_` and `.`
/// first, and the same one between all the words).
const SEPARATORS: &[u8] = b" -_.,+/:;|";
const SEPARATOR_BITS: f64 = 2.0;

/// The estimate for one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// log2 of the guesses of the cheapest decomposition.
    pub(crate) bits: f64,
    /// The part of `bits` carried by random characters.
    pub(crate) random_bits: f64,
    /// The bits of as many random characters of the key's alphabet: what
    /// the key would be worth without its patterns.
    pub(crate) random_key_bits: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pattern,
    Random,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    start: usize,
    end: usize,
    bits: f64,
    kind: Kind,
}

/// Candidate tokens of one key, keeping only those cheaper than random
/// characters.
struct Tokens<'a> {
    key: &'a [u8],
    per_char: f64,
    found: Vec<Token>,
}

impl Tokens<'_> {
    fn pattern(&mut self, start: usize, end: usize, bits: f64) {
        self.push(start, end, bits + OVERHEAD, Kind::Pattern);
    }

    /// Adds a token (its `bits` include `OVERHEAD` for a pattern) when it
    /// is cheaper than as many random characters.
    fn push(&mut self, start: usize, end: usize, bits: f64, kind: Kind) {
        if bits < as_f64(end - start) * self.per_char {
            self.found.push(Token {
                start,
                end,
                bits,
                kind,
            });
        }
    }
}

/// Estimates the guesses needed to find `key`.
pub(crate) fn estimate(key: &[u8]) -> Estimate {
    let (key, per_char, found) = candidates(key);
    cheapest(key.len(), per_char, found)
}

/// The bytes read, the bits of a random character, and every candidate
/// token cheaper than random characters.
fn candidates(key: &[u8]) -> (&[u8], f64, Vec<Token>) {
    let key = key.get(..MAX_LEN).unwrap_or(key);
    let per_char = alphabet(key).log2();
    let mut tokens = Tokens {
        key,
        per_char,
        found: Vec::new(),
    };
    dictionary(&mut tokens, false);
    dictionary(&mut tokens, true);
    years(&mut tokens);
    sequences(&mut tokens);
    walks(&mut tokens);
    copies(&mut tokens);
    runs(&mut tokens);
    (key, per_char, tokens.found)
}

fn as_f64(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// log2 of n choose k.
fn log2_choose(n: usize, k: usize) -> f64 {
    let k = k.min(n.saturating_sub(k));
    (1..=k)
        .map(|i| (as_f64(n - k + i) / as_f64(i)).log2())
        .sum()
}

/// The size of the alphabet the key looks drawn from.
fn alphabet(key: &[u8]) -> f64 {
    const LOWER: u8 = 1;
    const UPPER: u8 = 2;
    const DIGIT: u8 = 4;
    const SYMBOL: u8 = 8;
    const OTHER: u8 = 16;
    const HEX_LOWER: u8 = 32;
    const HEX_UPPER: u8 = 64;
    const BASE64_STD: u8 = 128;
    const BASE64_URL: u8 = 16;
    let mut classes = 0u8;
    // Bytes outside hex (either case) and outside either base64 alphabet.
    let mut outside = 0u8;
    for &b in key {
        classes |= match b {
            b'a'..=b'z' => LOWER,
            b'A'..=b'Z' => UPPER,
            b'0'..=b'9' => DIGIT,
            b' ' | b'!'..=b'~' => SYMBOL,
            _ => OTHER,
        };
        if !matches!(b, b'0'..=b'9' | b'a'..=b'f') {
            outside |= HEX_LOWER;
        }
        if !matches!(b, b'0'..=b'9' | b'A'..=b'F') {
            outside |= HEX_UPPER;
        }
        if !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
            outside |= BASE64_STD;
        }
        if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=')) {
            outside |= BASE64_URL;
        }
    }
    if key.is_empty() {
        return 1.0;
    }
    if classes == DIGIT {
        return 10.0;
    }
    if outside & HEX_LOWER == 0 || outside & HEX_UPPER == 0 {
        return 16.0;
    }
    let size: f64 = [
        (LOWER, 26.0),
        (UPPER, 26.0),
        (DIGIT, 10.0),
        (SYMBOL, SYMBOLS),
        (OTHER, 161.0),
    ]
    .iter()
    .filter(|(class, _)| classes & class != 0)
    .map(|(_, n)| n)
    .sum();
    let base64 = outside & BASE64_STD == 0 || outside & BASE64_URL == 0;
    if size > 64.0 && base64 { 64.0 } else { size }
}

/// The bits for the case of a token with `letters` letters, `upper` of them
/// upper-case, `first` whether only the first one is.
fn case_bits(letters: usize, upper: usize, first: bool) -> f64 {
    if upper == 0 {
        0.0
    } else if upper == letters || (upper == 1 && first) {
        1.0
    } else {
        log2_choose(letters, upper) + 1.0
    }
}

/// For each byte, the letters it may stand for: itself (case folded) or a
/// leetspeak substitution. Each entry: up to two letters (1 for `a` to 26 for
/// `z`, 0 for none), then flags.
const LETTERS: [[u8; 3]; 256] = letters_table();
const UPPER_CASE: u8 = 1;
const SUBSTITUTED: u8 = 2;

/// The table entry of a leetspeak substitute for `letter`.
const fn sub(letter: u8) -> u8 {
    letter - b'a' + 1
}

#[allow(clippy::indexing_slicing)] // i < 256, evaluated at compile time
const fn letters_table() -> [[u8; 3]; 256] {
    let mut table = [[0u8; 3]; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let b = i as u8;
        table[i] = match b {
            b'a'..=b'z' => [b - b'a' + 1, 0, 0],
            b'A'..=b'Z' => [b - b'A' + 1, 0, UPPER_CASE],
            b'4' | b'@' => [sub(b'a'), 0, SUBSTITUTED],
            b'8' => [sub(b'b'), 0, SUBSTITUTED],
            b'(' | b'{' | b'[' | b'<' => [sub(b'c'), 0, SUBSTITUTED],
            b'3' => [sub(b'e'), 0, SUBSTITUTED],
            b'6' | b'9' => [sub(b'g'), 0, SUBSTITUTED],
            b'1' | b'|' => [sub(b'i'), sub(b'l'), SUBSTITUTED],
            b'!' => [sub(b'i'), 0, SUBSTITUTED],
            b'0' => [sub(b'o'), 0, SUBSTITUTED],
            b'$' | b'5' => [sub(b's'), 0, SUBSTITUTED],
            b'7' | b'+' => [sub(b't'), 0, SUBSTITUTED],
            b'2' => [sub(b'z'), 0, SUBSTITUTED],
            b'%' => [sub(b'x'), 0, SUBSTITUTED],
            _ => [0, 0, 0],
        };
        i += 1;
    }
    table
}

#[derive(Clone, Copy)]
struct Frame {
    node: u32,
    pos: usize,
    upper: usize,
    subs: usize,
    first_upper: bool,
}

/// Dictionary words, forwards or reversed, any case, with leetspeak.
fn dictionary(tokens: &mut Tokens<'_>, reversed: bool) {
    let trie = words::trie();
    let word_bits = as_f64(trie.words).log2() + OVERHEAD;
    let key_word_bits = as_f64(trie.key_words).log2() + OVERHEAD;
    let reversal = if reversed { 1.0 } else { 0.0 };
    let text: Vec<u8> = if reversed {
        tokens.key.iter().rev().copied().collect()
    } else {
        tokens.key.to_vec()
    };
    let n = text.len();
    let mut stack = Vec::with_capacity(16);
    for (start, &byte) in text.iter().enumerate() {
        if LETTERS
            .get(usize::from(byte))
            .is_none_or(|l| matches!(l, [0, ..]))
        {
            continue;
        }
        stack.push(Frame {
            node: words::ROOT,
            pos: start,
            upper: 0,
            subs: 0,
            first_upper: false,
        });
        while let Some(mut f) = stack.pop() {
            // Follow one path; a second reading of a byte (`1`: i or l) waits
            // on the stack.
            loop {
                let len = f.pos - start;
                if len >= MIN_WORD
                    && let Some(entry) = trie.entry(f.node)
                {
                    let rank = if entry == Entry::KeyWord {
                        key_word_bits
                    } else {
                        word_bits
                    };
                    let floor = rank + reversal + as_f64(f.subs);
                    // Not even with a separator after it cheaper than random.
                    if floor < as_f64(len + 1) * tokens.per_char {
                        let leet = if f.subs == 0 {
                            0.0
                        } else {
                            log2_choose(len, f.subs) + as_f64(f.subs)
                        };
                        let bits = rank
                            + case_bits(len - f.subs, f.upper, f.first_upper)
                            + leet
                            + reversal;
                        let (a, b) = if reversed {
                            (n - f.pos, n - start)
                        } else {
                            (start, f.pos)
                        };
                        tokens.push(a, b, bits, Kind::Pattern);
                        // Passphrases: a word and the separator after it.
                        if tokens.key.get(b).is_some_and(|c| SEPARATORS.contains(c)) {
                            tokens.push(a, b + 1, bits + SEPARATOR_BITS, Kind::Pattern);
                        }
                    }
                }
                if len >= MAX_WORD {
                    break;
                }
                let Some(&byte) = text.get(f.pos) else {
                    break;
                };
                let [one, two, flags] = LETTERS.get(usize::from(byte)).copied().unwrap_or_default();
                let upper = flags & UPPER_CASE != 0;
                let next = |node| Frame {
                    node,
                    pos: f.pos + 1,
                    upper: f.upper + usize::from(upper),
                    subs: f.subs + usize::from(flags & SUBSTITUTED != 0),
                    first_upper: if len == 0 {
                        upper
                    } else {
                        f.first_upper && !upper
                    },
                };
                if let Some(node) = two.checked_sub(1).and_then(|l| trie.child(f.node, l)) {
                    stack.push(next(node));
                }
                match one.checked_sub(1).and_then(|l| trie.child(f.node, l)) {
                    Some(node) => f = next(node),
                    None => break,
                }
            }
        }
    }
}

/// Years 1900 to 2099.
fn years(tokens: &mut Tokens<'_>) {
    let bits = YEARS.log2();
    for start in 0..tokens.key.len() {
        if let Some([a, b, c, d]) = tokens.key.get(start..start + 4)
            && matches!((a, b), (b'1', b'9') | (b'2', b'0'))
            && c.is_ascii_digit()
            && d.is_ascii_digit()
        {
            tokens.pattern(start, start + 4, bits);
        }
    }
}

/// The class of a byte for sequences: lower, upper, digit, other.
fn class(b: u8) -> (u8, f64) {
    match b {
        b'a'..=b'z' => (0, 26.0),
        b'A'..=b'Z' => (1, 26.0),
        b'0'..=b'9' => (2, 10.0),
        _ => (3, 0.0),
    }
}

/// The step from `a` to `b` when it may continue a sequence: 0 (a run of one
/// character), or ±1, ±2 within letters or digits.
fn step(a: u8, b: u8) -> Option<i16> {
    let d = i16::from(b) - i16::from(a);
    let (ca, size) = class(a);
    (d == 0 || (ca == class(b).0 && size > 0.0 && d.abs() <= 2)).then_some(d)
}

/// Runs with a constant step: `aaaa`, `abcd`, `97531`, `ACEG`.
fn sequences(tokens: &mut Tokens<'_>) {
    let key = tokens.key;
    let n = key.len();
    let mut start = 0;
    while start + 1 < n {
        let pair = key.get(start).zip(key.get(start + 1));
        let Some(d) = pair.and_then(|(&a, &b)| step(a, b)) else {
            start += 1;
            continue;
        };
        let mut end = start + 2;
        while let Some((&a, &b)) = key.get(end - 1).zip(key.get(end)) {
            if step(a, b) != Some(d) {
                break;
            }
            end += 1;
        }
        if end - start >= MIN_SEQUENCE {
            let first = key.get(start).map_or(0.0, |&b| class(b).1);
            // The first character, then the step among 4 (or none).
            let base = if d == 0 {
                tokens.per_char
            } else {
                first.log2() + 2.0
            };
            // Every suffix and every prefix of the run.
            for a in start..=end - MIN_SEQUENCE {
                tokens.pattern(a, end, base + as_f64(end - a).log2());
            }
            for b in start + MIN_SEQUENCE..end {
                tokens.pattern(start, b, base + as_f64(b - start).log2());
            }
        }
        start = end - 1;
    }
}

/// Walks of neighbouring keys.
fn walks(tokens: &mut Tokens<'_>) {
    // The direction of a step between keys that do not touch.
    const NONE: u8 = u8::MAX;
    let key = tokens.key;
    // First, which layouts have MIN_WALK keys in a row that touch (most keys
    // have none): bit i for `keyboard::layouts()[i]`.
    let touching = keyboard::touching();
    let pairs: Vec<u8> = key
        .windows(2)
        .map(|pair| match *pair {
            [a, b] if a < 128 && b < 128 => touching
                .get(usize::from(a) * 128 + usize::from(b))
                .copied()
                .unwrap_or(0),
            _ => 0,
        })
        .collect();
    let walked = pairs.windows(MIN_WALK - 1).fold(0u8, |found, w| {
        found | w.iter().fold(u8::MAX, |all, m| all & m)
    });
    if walked == 0 {
        return;
    }
    let mut steps = vec![NONE; key.len()];
    for (i, layout) in keyboard::layouts().iter().enumerate() {
        if walked & (1 << i) == 0 {
            continue;
        }
        for (step, pair) in steps.iter_mut().zip(key.windows(2)) {
            if let [a, b] = *pair {
                *step = layout.step(a, b).unwrap_or(NONE);
            }
        }
        let first_bits = as_f64(layout.count).log2();
        let direction_bits = as_f64(layout.directions.len()).log2();
        // Only runs of MIN_WALK - 1 steps or more make walks.
        let mut start = 0;
        while start < key.len() {
            let run = steps
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&d| d != NONE)
                .count();
            if run + 1 >= MIN_WALK {
                walks_in(
                    tokens,
                    layout,
                    start,
                    run + 1,
                    &steps,
                    first_bits,
                    direction_bits,
                );
            }
            start += run + 1;
        }
    }
}

/// Every walk of `MIN_WALK` keys or more in the `len` keys from `start`,
/// all neighbours of the next.
fn walks_in(
    tokens: &mut Tokens<'_>,
    layout: &keyboard::Layout,
    start: usize,
    len: usize,
    steps: &[u8],
    first_bits: f64,
    direction_bits: f64,
) {
    let key = tokens.key;
    for a in start..start + len {
        let mut shifted = key
            .get(a)
            .and_then(|&b| layout.key(b))
            .map_or(0, |k| usize::from(k.shifted));
        let mut turns = 0;
        for b in a + 1..start + len {
            shifted += key
                .get(b)
                .and_then(|&c| layout.key(c))
                .map_or(0, |k| usize::from(k.shifted));
            if b >= a + 2 && steps.get(b - 1) != steps.get(b - 2) {
                turns += 1;
            }
            let keys = b + 1 - a;
            if keys >= MIN_WALK {
                let bits = first_bits
                    + direction_bits * as_f64(turns + 1)
                    + log2_choose(keys - 2, turns)
                    + as_f64(keys).log2()
                    + case_bits(keys, shifted, false);
                tokens.pattern(a, b + 1, bits);
            }
        }
    }
}

/// Bytes compared for copies: letters without case, every ASCII symbol or
/// space as one separator.
fn fold(b: u8) -> u8 {
    if b.is_ascii_punctuation() || b == b' ' {
        1
    } else {
        b.to_ascii_lowercase()
    }
}

/// Copies of an earlier part of the key (repeated blocks of any period, near
/// repeats with another case or separator).
fn copies(tokens: &mut Tokens<'_>) {
    const BUCKETS: usize = 512;
    let key = tokens.key;
    let n = key.len();
    if n < 2 * MIN_COPY {
        return;
    }
    let folded: Vec<u8> = key.iter().map(|&b| fold(b)).collect();
    let gram = |i: usize| folded.get(i..i + MIN_COPY);
    let hash = |g: &[u8]| {
        g.iter().fold(0usize, |h, &b| {
            h.wrapping_mul(131).wrapping_add(usize::from(b))
        }) % BUCKETS
    };
    let mut head = vec![usize::MAX; BUCKETS];
    let mut next = vec![usize::MAX; n];
    for j in 0..=n - MIN_COPY {
        let Some(g) = gram(j) else { break };
        let h = hash(g);
        let mut i = head.get(h).copied().unwrap_or(usize::MAX);
        let mut tried = 0;
        while i != usize::MAX && tried < MAX_SOURCES {
            if gram(i) == Some(g) {
                tried += 1;
                copy_from(tokens, &folded, i, j);
            }
            i = next.get(i).copied().unwrap_or(usize::MAX);
        }
        if let (Some(slot), Some(link)) = (head.get_mut(h), next.get_mut(j)) {
            *link = *slot;
            *slot = j;
        }
    }
}

/// Tokens for the copies at `j` of the part at `i` (`i < j`), every length.
fn copy_from(tokens: &mut Tokens<'_>, folded: &[u8], i: usize, j: usize) {
    let key = tokens.key;
    let source_bits = as_f64(j).log2();
    let (mut letters, mut case_diff, mut upper, mut lower) = (0, 0, 0, 0);
    let (mut separators, mut sep_diff, mut replacement, mut uniform) = (0, 0, None, true);
    let mut len = 0;
    while let (Some(a), Some(b)) = (folded.get(i + len), folded.get(j + len)) {
        if a != b {
            break;
        }
        let (Some(&x), Some(&y)) = (key.get(i + len), key.get(j + len)) else {
            break;
        };
        if y.is_ascii_alphabetic() {
            letters += 1;
            case_diff += usize::from(x != y);
            if y.is_ascii_uppercase() {
                upper += 1;
            } else {
                lower += 1;
            }
        } else if *b == 1 {
            separators += 1;
            if x != y {
                sep_diff += 1;
                uniform &= replacement.is_none_or(|r| r == y);
                replacement = Some(y);
            }
        }
        len += 1;
        if len >= MIN_COPY {
            let case = if case_diff == 0 {
                0.0
            } else if case_diff == letters || upper == letters || lower == letters {
                1.0
            } else {
                log2_choose(letters, case_diff) + 1.0
            };
            let seps = if sep_diff == 0 {
                0.0
            } else {
                let changed = if uniform { 1 } else { sep_diff };
                log2_choose(separators, sep_diff) + SYMBOLS.log2() * as_f64(changed)
            };
            tokens.pattern(j, j + len, source_bits + as_f64(len).log2() + case + seps);
        }
    }
}

/// Runs of hex or decimal digits: random, but from a smaller alphabet than
/// the rest of the key (a label in front of 16 random bytes in hex is worth
/// 128 bits, not 200).
fn runs(tokens: &mut Tokens<'_>) {
    // Lengths of the current runs: hex lower case, hex upper case, decimal.
    let mut lengths = [0usize; 3];
    let mins = [MIN_HEX_RUN, MIN_HEX_RUN, MIN_DIGIT_RUN];
    let bits = [4.0, 4.0, 10f64.log2()];
    for (i, &b) in tokens.key.iter().chain(std::iter::once(&b' ')).enumerate() {
        let member = [
            matches!(b, b'0'..=b'9' | b'a'..=b'f'),
            matches!(b, b'0'..=b'9' | b'A'..=b'F'),
            b.is_ascii_digit(),
        ];
        for k in 0..3 {
            let (Some(len), Some(&is), Some(&min), Some(&per_char)) =
                (lengths.get_mut(k), member.get(k), mins.get(k), bits.get(k))
            else {
                continue;
            };
            if is {
                *len += 1;
            } else {
                if *len >= min {
                    let run = *len;
                    tokens.push(i - run, i, as_f64(run) * per_char, Kind::Random);
                }
                *len = 0;
            }
        }
    }
}

/// The cheapest decomposition of the `n` bytes into tokens and random
/// characters.
fn cheapest(n: usize, per_char: f64, found: Vec<Token>) -> Estimate {
    let (bits, path) = cheapest_path(n, per_char, found);
    let mut estimate = Estimate {
        bits,
        random_bits: 0.0,
        random_key_bits: as_f64(n) * per_char,
    };
    let mut random_chars = n;
    for t in &path {
        random_chars -= t.end - t.start;
        if t.kind == Kind::Random {
            estimate.random_bits += t.bits;
        }
    }
    estimate.random_bits += as_f64(random_chars) * per_char;
    estimate
}

/// The bits of the cheapest decomposition and its tokens (random characters
/// left out), in reverse order.
fn cheapest_path(n: usize, per_char: f64, mut found: Vec<Token>) -> (f64, Vec<Token>) {
    found.sort_unstable_by_key(|t| t.start);
    let mut best = vec![f64::INFINITY; n + 1];
    // How each position is best reached: a token, or a random character.
    let mut via: Vec<Option<usize>> = vec![None; n + 1];
    if let Some(b) = best.first_mut() {
        *b = 0.0;
    }
    let mut next = 0;
    for pos in 0..n {
        let here = best.get(pos).copied().unwrap_or(f64::INFINITY);
        if let Some(b) = best.get_mut(pos + 1) {
            // On a tie a random character wins: it never lowers the estimate.
            if here + per_char <= *b {
                *b = here + per_char;
                if let Some(v) = via.get_mut(pos + 1) {
                    *v = None;
                }
            }
        }
        while let Some(t) = found.get(next).filter(|t| t.start == pos) {
            if let Some(b) = best.get_mut(t.end)
                && here + t.bits < *b
            {
                *b = here + t.bits;
                if let Some(v) = via.get_mut(t.end) {
                    *v = Some(next);
                }
            }
            next += 1;
        }
    }
    let mut path = Vec::new();
    let mut pos = n;
    while pos > 0 {
        if let Some(&t) = via.get(pos).copied().flatten().and_then(|i| found.get(i)) {
            path.push(t);
            pos = t.start;
        } else {
            pos -= 1;
        }
    }
    (best.get(n).copied().unwrap_or(0.0), path)
}

/// The cheapest decomposition, for tests: the bits of a random character,
/// the total, and the tokens in order.
#[cfg(test)]
fn explain(key: &[u8]) -> (f64, f64, Vec<Token>) {
    let (key, per_char, found) = candidates(key);
    let (bits, mut path) = cheapest_path(key.len(), per_char, found);
    path.reverse();
    (per_char, bits, path)
}

#[cfg(test)]
mod tests;
