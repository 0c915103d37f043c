package meshtest

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// HostileText is what a hostile or broken peer may send as the reason of a
// denial: line breaks that forge log lines, terminal escapes, a C1 control,
// DEL, a bidi override, a zero-width space, an invalid byte, and far more
// than a reason needs.
var HostileText = "no\nlevel=INFO msg=\"all good\"\r\n\x1b[2J\x1b]0;pwned\x07 \u0085\x7f\u202egnp.exe\u200b\xff " +
	strings.Repeat("é", 600)

// CheckPeerText fails t unless s is fit for logs: valid UTF-8, at most max
// bytes, without control or format characters.
func CheckPeerText(t testing.TB, s string, max int) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	if len(s) > max {
		t.Fatalf("%d bytes, want at most %d: %q", len(s), max, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("control or format character %U in %q", r, s)
		}
	}
}
