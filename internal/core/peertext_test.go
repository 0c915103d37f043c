package core_test

import (
	"strings"
	"testing"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshtest"
)

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
		{strings.Repeat("a", core.MaxPeerText), strings.Repeat("a", core.MaxPeerText)},
		{strings.Repeat("a", core.MaxPeerText+1), strings.Repeat("a", core.MaxPeerText-3) + "..."},
		// 2-byte runes: the cut falls at a rune boundary.
		{long, long[:core.MaxPeerText-4] + "..."},
	}
	for _, tc := range tests {
		got := core.PeerText(tc.in)
		if got != tc.want {
			t.Errorf("PeerText(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		meshtest.CheckPeerText(t, got, core.MaxPeerText)
	}
	meshtest.CheckPeerText(t, core.PeerText(meshtest.HostileText), core.MaxPeerText)
	if n := testing.AllocsPerRun(100, func() { _ = core.PeerText("billing denied caller \"progress\"") }); n != 0 {
		t.Fatalf("clean text allocates %v times", n)
	}
}
