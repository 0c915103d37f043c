package identity

import (
	"net/url"
	gopath "path"
	"strings"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		escaped string
		want    string // "" when not canonical
	}{
		{"/", "/"},
		{"/a", "/a"},
		{"/a/b/", "/a/b/"},
		{"/a..b/.c/c.", "/a..b/.c/c."},
		{"/billing.Billing/Charge", "/billing.Billing/Charge"},
		{"/a%20b", "/a b"},
		{"/p%75blic/x", "/public/x"},
		{"/a%252e%252e/b", "/a%2e%2e/b"}, // one decoding: the application's
		{"/a%3Bb", "/a;b"},
		{"", ""},
		{"*", ""},
		{"a/b", ""},
		{"//admin", ""},
		{"/a//b", ""},
		{"/a//", ""},
		{"/.", ""},
		{"/./admin", ""},
		{"/a/.", ""},
		{"/..", ""},
		{"/a/../admin", ""},
		{"/a/..", ""},
		{"/a/%2e%2e/admin", ""},
		{"/a/%2E%2E/admin", ""},
		{"/a/.%2e/admin", ""},
		{"/a/%2e/admin", ""},
		{"/a/..%2fadmin", ""},
		{"/a/..%2Fadmin", ""},
		{"/a%2fb", ""},
		{"/a%2Fb", ""},
		{"/a%2e", ""}, // an escaped dot, even inside a segment
		{`/a\b`, ""},
		{"/a%5cb", ""},
		{"/a%5C..%5Cadmin", ""},
		{"/a%", ""},
		{"/a%2", ""},
		{"/a%zz", ""},
		{"/a%g0", ""},
	}
	for _, tt := range tests {
		got, ok := CanonicalPath(tt.escaped)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q, %v", tt.escaped, got, ok, tt.want, tt.want != "")
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = CanonicalPath("/api/v1/r48/items/123") }); n != 0 {
		t.Errorf("CanonicalPath of a path without escapes: %v allocations", n)
	}
}

// FuzzCanonicalPath checks that what CanonicalPath accepts is a rooted path
// that path.Clean leaves as it is (but for a trailing slash), decoded as
// url.PathUnescape decodes it, with no escaped slash, dot or backslash.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b/", "/a/../b", "/a%2fb", "/a%2E", "//a", `/a\b`, "/a%20b", "/a%", "/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		got, ok := CanonicalPath(escaped)
		if !ok {
			if got != "" {
				t.Fatalf("CanonicalPath(%q) refused it but returned %q", escaped, got)
			}
			return
		}
		want, err := url.PathUnescape(escaped)
		if err != nil || got != want {
			t.Fatalf("CanonicalPath(%q) = %q; url.PathUnescape: %q, %v", escaped, got, want, err)
		}
		if !strings.HasPrefix(got, "/") || strings.Contains(got, `\`) ||
			(got != "/" && gopath.Clean(got) != strings.TrimSuffix(got, "/")) {
			t.Fatalf("CanonicalPath(%q) accepted %q", escaped, got)
		}
		if low := strings.ToLower(escaped); strings.Contains(low, "%2f") || strings.Contains(low, "%2e") || strings.Contains(low, "%5c") {
			t.Fatalf("CanonicalPath(%q) accepted an escaped slash, dot or backslash", escaped)
		}
	})
}
