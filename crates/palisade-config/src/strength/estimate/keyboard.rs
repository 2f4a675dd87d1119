//! Keyboard layouts as grids of keys, for walks (`qwerty`, `1qaz2wsx`,
//! `!QAZ@WSX`, `zaq1`, `7894561230`).

use std::sync::OnceLock;

/// A key: its row and column, and whether the character needs shift.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    row: i8,
    col: i8,
    pub(super) shifted: bool,
}

/// One layout: where each ASCII character is.
pub(super) struct Layout {
    keys: [Option<Key>; 128],
    /// The direction from the key of one ASCII byte to the key of another
    /// (`a * 128 + b`), `u8::MAX` when they do not touch.
    steps: Vec<u8>,
    /// Keys of the layout, for the guesses of a walk's first key.
    pub(super) count: usize,
    /// Neighbour directions: 6 on a staggered keyboard, 8 on a keypad.
    pub(super) directions: &'static [(i8, i8)],
}

/// A staggered keyboard: each row is shifted half a key to the right of the
/// row above, so a key touches two keys above and two below.
const STAGGERED: &[(i8, i8)] = &[(0, -1), (0, 1), (-1, 0), (-1, 1), (1, -1), (1, 0)];
/// A keypad: a straight grid, diagonals included.
const ALIGNED: &[(i8, i8)] = &[
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];

/// Rows as (column of the first key, unshifted, shifted); an empty shifted
/// row means "upper-case letters are the shifted keys".
type Rows = &'static [(i8, &'static str, &'static str)];

const QWERTY: Rows = &[
    (0, "`1234567890-=", "~!@#$%^&*()_+"),
    (1, "qwertyuiop[]\\", "QWERTYUIOP{}|"),
    (1, "asdfghjkl;'", "ASDFGHJKL:\""),
    (1, "zxcvbnm,./", "ZXCVBNM<>?"),
];
const QWERTZ: Rows = &[
    (0, "^1234567890", ""),
    (1, "qwertzuiop", ""),
    (1, "asdfghjkl", ""),
    (0, "<yxcvbnm,.-", ""),
];
const AZERTY: Rows = &[
    (0, "1234567890", ""),
    (1, "azertyuiop", ""),
    (1, "qsdfghjklm", ""),
    (0, "<wxcvbn,;:!", ""),
];
const DVORAK: Rows = &[
    (0, "`1234567890[]", "~!@#$%^&*(){}"),
    (1, "',.pyfgcrl/=\\", "\"<>PYFGCRL?+|"),
    (1, "aoeuidhtns-", "AOEUIDHTNS_"),
    (1, ";qjkxbmwvz", ":QJKXBMWVZ"),
];
const KEYPAD: Rows = &[
    (0, "789", ""),
    (0, "456", ""),
    (0, "123", ""),
    (0, "0.", ""),
];

impl Layout {
    fn new(rows: Rows, directions: &'static [(i8, i8)]) -> Self {
        let mut keys = [None; 128];
        let mut count = 0;
        for (row, &(start, plain, shifted)) in (0i8..).zip(rows) {
            let shifted = shifted.as_bytes();
            for (col, (i, b)) in (start..).zip(plain.bytes().enumerate()) {
                let key = Key {
                    row,
                    col,
                    shifted: false,
                };
                let upper = shifted
                    .get(i)
                    .copied()
                    .or_else(|| b.is_ascii_lowercase().then(|| b.to_ascii_uppercase()));
                count += 1;
                if let Some(slot) = keys.get_mut(usize::from(b)) {
                    *slot = Some(key);
                }
                if let Some(slot) = upper.and_then(|u| keys.get_mut(usize::from(u))) {
                    *slot = Some(Key {
                        shifted: true,
                        ..key
                    });
                }
            }
        }
        let mut layout = Self {
            keys,
            steps: Vec::new(),
            count,
            directions,
        };
        layout.steps = (0..128u8)
            .flat_map(|a| (0..128u8).map(move |b| (a, b)))
            .map(|(a, b)| {
                let (Some(a), Some(b)) = (layout.key(a), layout.key(b)) else {
                    return u8::MAX;
                };
                layout
                    .direction(a, b)
                    .and_then(|d| u8::try_from(d).ok())
                    .unwrap_or(u8::MAX)
            })
            .collect();
        layout
    }

    /// The key of `b`, if the layout has one.
    pub(super) fn key(&self, b: u8) -> Option<Key> {
        self.keys.get(usize::from(b)).copied().flatten()
    }

    /// The direction (an index into `directions`) from `a` to its neighbour
    /// `b`; `None` when they are not neighbours.
    pub(super) fn direction(&self, a: Key, b: Key) -> Option<usize> {
        let step = (b.row - a.row, b.col - a.col);
        self.directions.iter().position(|&d| d == step)
    }

    /// The direction from the key of byte `a` to the key of byte `b`, when
    /// both are on the layout and touch.
    pub(super) fn step(&self, a: u8, b: u8) -> Option<u8> {
        let i = usize::from(a).checked_mul(128)? + usize::from(b);
        self.steps.get(i).copied().filter(|&d| d != u8::MAX)
    }
}

/// For each pair of ASCII bytes (`a * 128 + b`), the layouts (bit `i` for
/// `layouts()[i]`) on which their keys touch.
pub(super) fn touching() -> &'static [u8] {
    static TOUCHING: OnceLock<Vec<u8>> = OnceLock::new();
    TOUCHING.get_or_init(|| {
        (0..128u8)
            .flat_map(|a| (0..128u8).map(move |b| (a, b)))
            .map(|(a, b)| {
                layouts()
                    .iter()
                    .enumerate()
                    .filter(|(_, layout)| layout.step(a, b).is_some())
                    .fold(0u8, |mask, (i, _)| mask | (1 << i))
            })
            .collect()
    })
}

/// Every layout walks are looked for on.
pub(super) fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        vec![
            Layout::new(QWERTY, STAGGERED),
            Layout::new(QWERTZ, STAGGERED),
            Layout::new(AZERTY, STAGGERED),
            Layout::new(DVORAK, STAGGERED),
            Layout::new(KEYPAD, ALIGNED),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walks(layout: &Layout, text: &str) -> bool {
        text.as_bytes().windows(2).all(|w| match w {
            [a, b] => layout
                .key(*a)
                .zip(layout.key(*b))
                .and_then(|(a, b)| layout.direction(a, b))
                .is_some(),
            _ => false,
        })
    }

    #[test]
    fn neighbours_follow_the_keyboard() {
        let qwerty = &layouts()[0];
        for walk in [
            "qwerty", "1qaz", "zaq1", "!QAZ", "xsw2", "poiuy", "ASDFgh", ",ki8", "mju7",
        ] {
            assert!(walks(qwerty, walk), "{walk}");
        }
        for not in ["qa1", "qe", "az2", "pq"] {
            assert!(!walks(qwerty, not), "{not}");
        }
        assert!(walks(&layouts()[4], "7415963"));
        assert!(walks(&layouts()[2], "azerty"));
        assert!(walks(&layouts()[3], "aoeuid"));
    }
}
