package core

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// hostileText is what a hostile or broken peer may send as the reason of a
// denial: line breaks that forge log lines, terminal escapes, a C1 control,
// DEL, a bidi override, a zero-width space, an invalid byte, and far more
// than a reason needs.
var hostileText = "no\nlevel=INFO msg=\"all good\"\r\n\x1b[2J\x1b]0;pwned\x07 \u0085\x7f\u202egnp.exe\u200b\xff " +
	strings.Repeat("é", 600)

// checkPeerText fails the test unless s is fit for logs: valid UTF-8,
// bounded, without control or format characters.
func checkPeerText(t testing.TB, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	if len(s) > MaxPeerText {
		t.Fatalf("%d bytes, want at most %d: %q", len(s), MaxPeerText, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("control or format character %U in %q", r, s)
		}
	}
}

func TestPeerText(t *testing.T) {
	long := strings.Repeat("é", 600)
	tests := []struct{ in, want string }{
		{"", ""},
		{"billing denied caller \"progress\": no rule", "billing denied caller \"progress\": no rule"},
		{"a\nb\r\tc", "a b  c"},
		{"\x1b[31mred\x1b[0m", " [31mred [0m"},
		{"c1\u0085 del\x7f", "c1  del "},
		{"bidi\u202eexe.txt zw\u200bsp\ufeff", "bidi exe.txt zw sp "},
		{"line\u2028para\u2029", "line para "},
		{"bad\xffbyte", "bad\ufffdbyte"},
		{"ünïcode ok", "ünïcode ok"},
		{strings.Repeat("a", MaxPeerText), strings.Repeat("a", MaxPeerText)},
		{strings.Repeat("a", MaxPeerText+1), strings.Repeat("a", MaxPeerText-3) + "..."},
		// 2-byte runes: the cut falls at a rune boundary.
		{long, long[:MaxPeerText-4] + "..."},
	}
	for _, tc := range tests {
		got := PeerText(tc.in)
		if got != tc.want {
			t.Errorf("PeerText(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		checkPeerText(t, got)
	}
	checkPeerText(t, PeerText(hostileText))
	if n := testing.AllocsPerRun(100, func() { _ = PeerText("billing denied caller \"progress\"") }); n != 0 {
		t.Fatalf("clean text allocates %v times", n)
	}
}
