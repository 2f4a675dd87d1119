//! The dictionary: 73,129 English words, first names, surnames, place and
//! company names from SCOWL (Debian's `wamerican`, see `NOTICE`), plus the
//! words configuration keys are made of (`prod`, `jwt`, `signing`...), in a
//! trie built once, on first use.
//!
//! `words.txt` is front-coded (each line: `'0'` plus the length of the prefix
//! shared with the previous word, then the rest); `tools/make-words.sh`
//! regenerates it.

use std::collections::VecDeque;
use std::sync::OnceLock;

const WORDS: &str = include_str!("words.txt");

/// Words of configuration keys and their environments, the fictional
/// companies of tutorials, and the most frequent words of English text,
/// that an attacker tries before the rest of the dictionary. Separated by
/// white space.
const KEY_WORDS: &str = "\
    jwt jws jwe jwk hmac sha hash key keys token tokens api apis app apps auth oauth oidc saml \
    sso signing signer sign secret secrets pass passwd pwd password access refresh bearer \
    session sessions cookie cookies csrf salt pepper nonce cipher crypto encrypt encryption \
    private public master root admin administrator user users login logout account client \
    tenant webhook \
    prod prd production dev devel development stage staging stg uat test testing sandbox \
    preprod local localhost internal external live demo beta alpha main primary backup new old \
    tmp temp default env config conf settings \
    backend frontend server service services cluster node kube kubernetes docker compose helm \
    terraform aws gcp azure cloud redis postgres postgresql mysql mongo mongodb sqlite kafka \
    rabbitmq nginx apache django flask rails laravel spring express nestjs nextjs react angular \
    vue svelte deno rust golang java python ruby php dotnet axum tower tokio hyper palisade \
    github gitlab bitbucket jenkins circleci heroku vercel netlify supabase firebase stripe \
    twilio sendgrid okta keycloak vault web www http https com net org platform portal gateway \
    proxy edge data database \
    corp inc llc ltd gmbh company enterprise enterprises global group holdings solutions \
    systems technologies tech labs software digital acme contoso fabrikam northwind initech \
    globex umbrella hooli wayne stark cyberdyne tyrell wonka dunder mifflin piedpiper wernham \
    vandelay soylent oscorp aperture blackmesa \
    foo bar baz qux quux lorem ipsum dolor amet hello world welcome letmein iloveyou monkey \
    dragon sunshine princess football baseball superman batman trustno abc xyz asdf qwerty \
    super mega ultra long strong random \
    the and for that this with you not are but his her she they them their there have has had \
    was were will would can could should shall may might must all any some one two three four \
    five six seven eight nine ten first last from into onto over under about after before again \
    also just only very more most much many such than then when what who whom which where why \
    how its our ours your yours him out off down here now well even back still way day days \
    time year years people man men woman women child life world work home house school night \
    morning today tomorrow yesterday week month good great best better little big small high \
    low right left same other every each own say said get got make made know knew think take \
    took see saw come came want look use used find give gave tell told ask feel try leave call \
    keep let put run ran going gone went love like need play live stay open close dog cat cats \
    dogs fox red blue green black white yellow orange purple pink brown gold silver sun moon \
    star stars sky sea water fire earth wind rain snow tree flower summer winter spring autumn \
    fall monday tuesday wednesday thursday friday saturday sunday january february march april \
    june july august september october november december happy lucky secure safe quick lazy \
    jump jumps horse battery staple correct ";

/// A node: bits 0–25 mark the children (`a`–`z`), stored from `first` on in
/// letter order; `END` marks a word, `KEY_WORD` one of `KEY_WORDS`.
#[derive(Clone, Copy, Default)]
struct Node {
    mask: u32,
    first: u32,
}

const END: u32 = 1 << 31;
const KEY_WORD: u32 = 1 << 30;
const LETTERS: u32 = (1 << 26) - 1;

/// What a word found in the trie is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// One of the English list.
    Word,
    /// One of the words of configuration keys.
    KeyWord,
}

pub(super) struct Trie {
    nodes: Vec<Node>,
    /// How many words of each kind: the guesses to try them all.
    pub(super) words: usize,
    pub(super) key_words: usize,
}

pub(super) const ROOT: u32 = 0;

impl Trie {
    /// The child of `node` for `letter` (0 for `a` to 25 for `z`).
    pub(super) fn child(&self, node: u32, letter: u8) -> Option<u32> {
        let n = self.nodes.get(node as usize)?;
        let bit = 1u32.checked_shl(u32::from(letter))? & LETTERS;
        (n.mask & bit != 0).then(|| n.first + (n.mask & (bit - 1)).count_ones())
    }

    /// Whether a word ends at `node`, and which kind.
    pub(super) fn entry(&self, node: u32) -> Option<Entry> {
        let n = self.nodes.get(node as usize)?;
        if n.mask & KEY_WORD != 0 {
            Some(Entry::KeyWord)
        } else if n.mask & END != 0 {
            Some(Entry::Word)
        } else {
            None
        }
    }
}

/// The trie, built on first use (170,496 nodes of 8 bytes).
pub(super) fn trie() -> &'static Trie {
    static TRIE: OnceLock<Trie> = OnceLock::new();
    TRIE.get_or_init(build)
}

/// Decodes the front-coded list into one buffer of words and their ranges.
fn decode() -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut buf: Vec<u8> = Vec::with_capacity(WORDS.len() * 2);
    let mut ranges = Vec::with_capacity(73_200);
    let mut prev = (0, 0);
    for line in WORDS.lines() {
        let Some((&head, rest)) = line.as_bytes().split_first() else {
            continue;
        };
        let shared = usize::from(head.saturating_sub(b'0')).min(prev.1 - prev.0);
        let start = buf.len();
        buf.extend_from_within(prev.0..prev.0 + shared);
        buf.extend_from_slice(rest);
        prev = (start, buf.len());
        ranges.push(prev);
    }
    (buf, ranges)
}

fn build() -> Trie {
    let (buf, ranges) = decode();
    let mut words: Vec<(&[u8], bool)> = ranges
        .iter()
        .filter_map(|&(a, b)| buf.get(a..b))
        .filter(|w| w.iter().all(u8::is_ascii_lowercase))
        .map(|w| (w, false))
        .collect();
    let english = words.len();
    words.extend(
        KEY_WORDS
            .split_ascii_whitespace()
            .map(|w| (w.as_bytes(), true))
            .filter(|(w, _)| w.iter().all(u8::is_ascii_lowercase)),
    );
    // Sorted, with a key word first among equal words, then deduplicated.
    words.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    words.dedup_by(|later, first| later.0 == first.0);
    let key_words = words.iter().filter(|(_, key_word)| *key_word).count();

    let mut nodes = vec![Node::default()];
    // Breadth first, so that the children of a node are contiguous.
    let mut queue = VecDeque::from([(0usize, 0usize, words.len(), 0usize)]);
    while let Some((id, lo, hi, depth)) = queue.pop_front() {
        let mut mask = 0u32;
        let mut i = lo;
        while let Some((word, key_word)) = words.get(i).filter(|_| i < hi) {
            if word.len() != depth {
                break;
            }
            mask |= if *key_word { END | KEY_WORD } else { END };
            i += 1;
        }
        let first = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        while i < hi {
            let Some(letter) = words.get(i).and_then(|(w, _)| w.get(depth)).copied() else {
                break;
            };
            let start = i;
            while words
                .get(i)
                .filter(|_| i < hi)
                .and_then(|(w, _)| w.get(depth))
                == Some(&letter)
            {
                i += 1;
            }
            mask |= 1 << (letter - b'a');
            queue.push_back((nodes.len(), start, i, depth + 1));
            nodes.push(Node::default());
        }
        if let Some(node) = nodes.get_mut(id) {
            *node = Node { mask, first };
        }
    }
    Trie {
        nodes,
        words: english,
        key_words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(word: &str) -> Option<Entry> {
        let trie = trie();
        let mut node = ROOT;
        for b in word.bytes() {
            node = trie.child(node, b - b'a')?;
        }
        trie.entry(node)
    }

    #[test]
    fn the_list_decodes_and_every_kind_is_found() {
        let trie = trie();
        assert_eq!(trie.words, 73_129);
        assert_eq!(trie.key_words, 486);
        assert_eq!(trie.nodes.len(), 170_496);
        for w in [
            "aardvark",
            "elephant",
            "christopher",
            "smith",
            "microsoft",
            "zygote",
        ] {
            assert_eq!(find(w), Some(Entry::Word), "{w}");
        }
        for w in ["prod", "jwt", "globex", "kubernetes", "signing"] {
            assert_eq!(find(w), Some(Entry::KeyWord), "{w}");
        }
        for w in ["elephan", "xqzv", "zzzzzz", "a"] {
            assert_eq!(find(w), None, "{w}");
        }
    }
}
