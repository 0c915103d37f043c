package identity

import "testing"

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
