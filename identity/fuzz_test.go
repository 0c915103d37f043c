package identity

import (
	"net/url"
	"testing"
)

func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://mesh.local/svc/billing",
		"spiffe://td/ns/default/dc/dc1/svc/web",
		"spiffe://td/ap/p/ns/n/dc/d/svc/s",
		"spiffe://td",
		"spiffe://td/",
		"spiffe://td/svc/..",
		"spiffe://td/a%2Fb",
		"spiffe://TD/x",
		"SPIFFE://td/x",
		"spiffe://u@td:80/x?q#f",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if !id.IsZero() {
				t.Fatalf("ParseID(%q) failed but returned %#v", s, id)
			}
			return
		}
		// Valid IDs round-trip through String.
		if got := id.String(); got != s {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
		again, err := ParseID(id.String())
		if err != nil || again != id {
			t.Fatalf("ParseID(String()) = %#v, %v; want %#v", again, err, id)
		}
		if id.IsZero() || id.TrustDomain() == "" {
			t.Fatalf("valid %q gives an empty trust domain", s)
		}
		if svc, ok := id.Service(); ok && svc == "" {
			t.Fatalf("Service() of %q is empty", s)
		}
		// A certificate's URI SAN goes through url.Parse: same answer.
		if u, err := url.Parse(s); err == nil {
			fromURL, err := idFromURL(u)
			if err != nil || fromURL != id {
				t.Fatalf("idFromURL(%q) = %#v, %v; want %#v", s, fromURL, err, id)
			}
		}
	})
}
