package core

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPeerText bounds, in bytes, the text a peer contributes to a CallError.
const MaxPeerText = 256

// PeerText returns s, text that a peer sent (a denial's body, a gRPC status
// message, the fields of a marked status), fit to go into a CallError and
// from there into logs: valid UTF-8, at most MaxPeerText bytes (cut at a rune
// boundary and ended with "..."), every control character (C0, DEL, C1), line
// or paragraph separator and format character (bidi overrides, zero-width
// characters) replaced by a space, and invalid bytes by U+FFFD. Text that is
// already printable ASCII and short enough is returned as is, without
// allocating.
func PeerText(s string) string {
	if len(s) <= MaxPeerText && printableASCII(s) {
		return s
	}
	const ellipsis = "..."
	var b strings.Builder
	b.Grow(min(len(s), MaxPeerText) + utf8.UTFMax)
	i := 0
	for i < len(s) && b.Len() <= MaxPeerText {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) ||
			r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r) {
			r = ' '
		}
		b.WriteRune(r) // an invalid byte decodes to, and is written as, U+FFFD
	}
	out := b.String()
	if i == len(s) && len(out) <= MaxPeerText {
		return out
	}
	cut := MaxPeerText - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + ellipsis
}

// printableASCII reports whether s holds printable ASCII only (space to ~).
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
