#!/bin/sh
# Regenerates src/strength/words.txt, the dictionary of the key-strength
# estimate, from Debian's `wamerican` package (SCOWL size 50: common English
# words, the 1990 US Census first names and surnames, place and company
# names). See ../NOTICE for its licence.
#
#   apt-get install wamerican    # or: apt-get download wamerican && dpkg-deb -x ...
#   sh tools/make-words.sh /usr/share/dict/american-english > src/strength/words.txt
#
# Kept: entries of 3 to 20 ASCII letters (no possessives, no accents),
# lower-cased, sorted bytewise, without duplicates. Written front-coded: each
# line is one character, '0' plus the length of the prefix shared with the
# previous word, then the rest of the word.
set -eu
LC_ALL=C
export LC_ALL
tr 'A-Z' 'a-z' < "${1:-/usr/share/dict/american-english}" \
    | grep -E '^[a-z]{3,20}$' \
    | sort -u \
    | awk '{
        n = 0
        while (n < length(prev) && n < length($0) && substr(prev, n + 1, 1) == substr($0, n + 1, 1)) n++
        printf "%c%s\n", 48 + n, substr($0, n + 1)
        prev = $0
    }'
